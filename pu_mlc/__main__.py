"""``python -m pu_mlc ...``: the same command line as the installed ``pu-mlc`` script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
