"""`python -m harness ...` and `accelerate launch [-m] harness run ...`: the `harness` command line."""

import sys

from harness.cli import main

if __name__ == "__main__":
    sys.exit(main())
