"""``python -m jaxlearn``: the experiment runner's command line (see ``jaxlearn --help``)."""

import sys

from jaxlearn.runner.cli import main

if __name__ == "__main__":
    sys.exit(main())
