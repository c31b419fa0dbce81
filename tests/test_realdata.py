"""The four benchmark datasets, read from $EC4SREC_DATA_DIR (CI sets it; skipped otherwise)."""
import os

import numpy as np
import pytest

from ec4srec.config import DataConfig
from ec4srec.data import load_dataset
from ec4srec.data.sources import DATASETS

DATA_DIR = os.environ.get("EC4SREC_DATA_DIR")
pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not DATA_DIR, reason="EC4SREC_DATA_DIR is not set: the benchmark "
                                 "datasets are not available on this machine")]

# (users, items, interactions) from ../shared/data/README.md (paper Table 2 for the Amazon sets).
EXPECTED = {"beauty": (22363, 12101, 198502), "sports": (35598, 18357, 296337),
            "clothing": (39387, 23033, 278677), "ml-1m": (6040, 3416, 999611)}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dataset_statistics_and_split(name):
    data = load_dataset(DataConfig(dataset=name, data_dir=DATA_DIR), download=False)
    stats = data.stats()
    # The counts equal the published statistics.
    assert (stats["users"], stats["items"], stats["interactions"]) == EXPECTED[name]
    # Files with a published checksum are byte-identical to the public release.
    if DATASETS[name].sha256:
        assert stats["sha256"] == DATASETS[name].sha256
    split = data.split
    # Leave-one-out: every interaction is a training target, except the 2 held out per user and
    # each user's first item.
    assert len(split.train) == stats["interactions"] - 3 * stats["users"]
    # No training target is a validation or test target position.
    held_out = np.concatenate([split.valid.end, split.test.end])
    assert not np.isin(split.train.end, held_out).any()
