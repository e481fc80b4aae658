"""The plotting base every figure module shares: the Agg backend, PNG data URIs, the condition order.

A leaf of the report: figure modules import it, ``report`` imports the figure modules (never the other way).
"""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from entrainment.vocabulary import CONDITION_ORDER  # noqa: E402

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
METHOD_COLORS = {"zero": "#1f77b4", "mean": "#2ca02c", "resample": "#d62728"}

__all__ = ["plt", "png", "CONDITION_ORDER", "COLORS", "METHOD_COLORS"]


def png(fig) -> str:
    """The figure as a PNG data URI (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
