"""The statistics of the claims: random-head nulls and t intervals, the subject-level verdict, scaling fits,
sentence-level statistics.
"""
