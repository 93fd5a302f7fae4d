"""Misalignment scorers; see tfpref.scorers.base."""
