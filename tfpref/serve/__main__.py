"""`python -m tfpref.serve ...` is `tfpref serve ...`."""
import sys

from tfpref.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
