"""``python -m archlab``: the same command line as ``archlab``."""

from archlab.cli import main

if __name__ == "__main__":
    main()
