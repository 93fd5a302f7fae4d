"""Evaluation of trained runs: held-out metrics, classification reports, reports on disk."""
