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


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec", "caser"])
def test_each_backbone_trains_end_to_end_on_beauty(tmp_path, backbone):
    """`ec4srec train` on the real Beauty file, one epoch of a small model per backbone."""
    import json
    import subprocess
    import sys
    out = subprocess.run(
        [sys.executable, "-m", "ec4srec.cli", "train", "--dataset", "beauty", "--data-dir", DATA_DIR,
         "--backbone", backbone, "--method", "sasrec", "--set", "train.epochs=1",
         "--set", "model.hidden_size=32", "--set", "model.num_layers=1", "--set", "model.inner_size=64",
         "--set", "model.gru_hidden_size=32", "--set", "train.progress=off", "--set", "train.threads=1",
         "--output", str(tmp_path / backbone)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / backbone / "metrics.json").read_text())
    # ranking 12,101 items at random gives HR@10 ~ 10 / 12101 = 0.0008: one epoch must learn
    # far more than that on validation, and the test split is evaluated (once) at the end
    assert metrics["valid"]["hr@10"] > 10 * 10 / 12101
    assert 0 < metrics["test"]["hr@10"] <= 1 and metrics["test"]["ndcg@10"] <= metrics["test"]["hr@10"]
