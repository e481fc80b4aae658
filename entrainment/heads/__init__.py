"""Find the heads: head sets, the mask search, stability selection, agreement, random sets, single-head maps,
head circuits and the dissociation test.
"""
