"""One entry module per pipeline stage, named like tasks/ and flows/: generate, measure, stats, discover, scan,
ablate, head_types, sentences, report; and crossfit (the cross-fitted discover + ablate).
"""
