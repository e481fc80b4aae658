"""Test the heads: what removing a head set does to the answers, side effects, resample donors."""
