"""entrainment: contextual entrainment measurement and entrainment-head discovery.

The library is plain Python (no Prefect): each stage is a function that takes data and returns data.
Prefect wiring lives in the top-level ``tasks`` and ``flows`` packages.
"""

__version__ = "0.1.0"
