"""`python -m tfpref ...` is the `tfpref` command."""
import sys

from tfpref.cli import main

if __name__ == "__main__":
    sys.exit(main())
