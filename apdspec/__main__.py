"""`python -m apdspec`: the same as the `apdspec` command."""
import sys

from apdspec.cli import main

if __name__ == "__main__":
    sys.exit(main())
