"""The training loop and what runs around it: strategy, checkpoints, summaries, export."""
