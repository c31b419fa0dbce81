"""The whole paper study on a GPU cluster (Tables 3 and 4, one budgeted study per dataset and backbone).

The same command as ``ec4srec paper-study`` (its flags, help and code: ec4srec/search/paper_study.py).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ec4srec.search.paper_study import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
