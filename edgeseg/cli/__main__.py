"""``python -m edgeseg.cli``: the command line (same as ``python -m edgeseg``)."""
from edgeseg.cli import main

if __name__ == "__main__":
    main()
