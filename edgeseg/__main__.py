"""``python -m edgeseg``: the same command line as the ``edgeseg`` console script."""
from edgeseg.cli import main

if __name__ == "__main__":
    main()
