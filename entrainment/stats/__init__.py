"""The statistics of the claims: random-head nulls, the subject-level verdict, cross-fitting, summaries, scaling fits."""
