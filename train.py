#!/usr/bin/env python
"""Train a tfpref model. `python train.py --help` documents every flag; no flags runs the default job."""
import os
import sys

if "--verbose" in sys.argv:  # must be decided before TensorFlow is imported
    os.environ["TFPREF_VERBOSE"] = "1"

from tfpref.cli import train_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(train_main())
