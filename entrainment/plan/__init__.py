"""`entrainment plan`: predicted time and memory of a run before it runs (no torch imported)."""
