"""Full-ranking evaluation time over all users (the issue's target: all Beauty users <= 2 s),
for the package's backbones, the pre-optimisation evaluation and the naive baseline.

    python benchmarks/eval_time.py                  # Beauty + Sports
    python benchmarks/eval_time.py --eval-runs 5 --write

Same machinery and options as benchmarks/epoch_time.py (``--datasets``, ``--variants``,
``--threads``, ``--write``), evaluation only: median of ``--eval-runs`` passes over the
validation target of every user, after one untimed warm-up pass.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import epoch_time  # noqa: E402

if __name__ == "__main__":
    if "--child" in sys.argv:
        epoch_time.main()
    else:
        epoch_time.main(mode="eval")
