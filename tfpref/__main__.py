"""`python -m tfpref ...` is the `tfpref` command."""
import sys

from tfpref.cli import main

sys.exit(main())
