"""Carry a study's unfinished trials (their newest checkpoints) into its durable state.

The same code as the driver's own carries (ec4srec/search/carry.py): run it before
``tune/report.py --export`` on a study whose driver predates carries.
"""
import sys

from ec4srec.search.carry import main

if __name__ == "__main__":
    sys.exit(main())
