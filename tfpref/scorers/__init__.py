"""Scorers: text -> misalignment (lower is better)."""
