"""The head panels draw the subject-level uncertainty the tables carry (head_agreement, head_scores)."""

from __future__ import annotations

import numpy as np
import polars as pl

from entrainment.figures import head_panels


def _agreement(subject_ci: bool) -> pl.DataFrame:
    rows = []
    for method in ("scan", "mask", "random"):
        for k in range(4):
            gain = 0.0 if k == 0 else 0.5 * k
            rows.append(
                {
                    "model": "m", "relation": "r", "ablation_method": "zero", "method": method, "k": k, "n": 12,
                    "delta": 3.0 + gain, "gain": gain, "gain_ci_low": gain - 0.2, "gain_ci_high": gain + 0.2,
                    "n_subjects": 3, "subject_gain": gain if subject_ci else float("nan"),
                    "subject_gain_ci_low": gain - 1.0 if subject_ci else float("nan"),
                    "subject_gain_ci_high": gain + 1.0 if subject_ci else float("nan"),
                    "spearman_atp_scan": 0.3,
                }
            )  # fmt: skip
    return pl.DataFrame(rows)


def test_k_curve_draws_subject_level_and_falls_back_to_prompt_level():
    for subject_ci in (True, False):
        uri = head_panels.k_curve_plot(_agreement(subject_ci))
        assert uri and uri.startswith("data:image/png;base64,")
    assert head_panels.k_curve_plot(_agreement(True).clear()) is None


def test_only_heads_whose_subject_ci_excludes_zero_are_marked():
    scores = pl.DataFrame(
        {
            "layer": [0, 0, 1, 1],
            "head": [0, 1, 0, 1],
            "subject_ci_low": [0.1, -0.5, float("nan"), -0.9],
            "subject_ci_high": [0.8, 0.5, float("nan"), -0.1],
        }
    )
    assert head_panels._subject_significant(scores).tolist() == [[0, 0], [1, 1]]  # NaN (atp, < 2 subjects) never
    assert head_panels._subject_significant(scores.drop("subject_ci_low", "subject_ci_high")).shape == (0, 2)
    assert np.asarray(head_panels._subject_significant(scores.head(0))).shape == (0, 2)
