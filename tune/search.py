"""Hyperparameter search for EC4SRec and its baselines on a Ray cluster (docs/search.md).

The same command as ``ec4srec search`` (its flags, help and code: ec4srec/search/command.py).
"""
import sys

from ec4srec.search.command import main

if __name__ == "__main__":
    sys.exit(main())
