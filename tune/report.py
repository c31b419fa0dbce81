"""Paper-style tables and figures of a study, or of converged single runs.

The same command as ``ec4srec report`` (its flags, help and code: ec4srec/report/command.py).
"""
import sys

from ec4srec.report.command import main

if __name__ == "__main__":
    sys.exit(main())
