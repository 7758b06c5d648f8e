"""``python -m flowturbo_diffusers.benchmark`` (the same as ``flowturbo bench``)."""

import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
