#!/usr/bin/env python
"""Evaluate a trained run. `python evaluate.py --help` documents every flag."""
import os
import sys

if "--verbose" in sys.argv:  # must be decided before TensorFlow is imported
    os.environ["TFPREF_VERBOSE"] = "1"

from tfpref.cli import evaluate_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(evaluate_main())
