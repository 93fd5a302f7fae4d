#!/usr/bin/env python
"""Train a tfpref model. `python train.py --help` documents every flag; no flags runs the default job.

The same command as `tfpref train`.
"""
import sys

from tfpref.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
