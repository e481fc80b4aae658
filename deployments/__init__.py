"""Scheduled deployments of the pipeline (the one registry): see deployments/schedules.py."""
