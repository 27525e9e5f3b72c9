"""Experiments: one-off studies whose results are recorded in artifacts/experiments.json and docs/."""
