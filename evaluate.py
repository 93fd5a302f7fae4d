#!/usr/bin/env python
"""Evaluate a trained run. `python evaluate.py --help` documents every flag.

The same command as `tfpref evaluate`.
"""
import sys

from tfpref.cli import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())
