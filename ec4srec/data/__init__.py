"""Data: files -> validated sequences -> leave-one-out rows -> trimmed batches."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

from ..config import DataConfig
from ..paths import recorded_path
from .io import DataError, RawSequences, read_sequences
from .sources import DATASETS, SYNTHETIC, resolve
from .split import Examples, SplitData, leave_one_out
from .synthetic import SyntheticData, generate, paper_split

__all__ = ["DataError", "Dataset", "Examples", "RawSequences", "SplitData", "load_dataset"]


@dataclass
class Dataset:
    name: str
    source: str                 # file path, or "generated"
    raw: RawSequences
    split: SplitData
    synthetic: SyntheticData | None = None

    def stats(self) -> dict:
        lengths = self.raw.lengths
        return {"dataset": self.name, "source": recorded_path(self.source), "users": int(len(lengths)),
                "items": int(self.raw.num_items), "interactions": int(lengths.sum()),
                "train_rows": len(self.split.train), "skipped_short_users": self.raw.skipped_short,
                "sha256": self.raw.sha256}


def load_dataset(config: DataConfig, download: bool = True) -> Dataset:
    """Resolve, read, validate and split the configured dataset (DataError on bad input)."""
    if config.dataset == SYNTHETIC:
        syn = generate(seed=config.synthetic_seed)
        split = (paper_split(syn.raw, config.max_len) if config.synthetic_split == "paper"
                 else leave_one_out(syn.raw, config.max_len))
        return Dataset(SYNTHETIC, "generated", syn.raw, split, syn)
    path = resolve(config.dataset, config.data_dir, download=download)
    raw = read_sequences(path, short_users=config.short_users)
    name = config.dataset if config.dataset in DATASETS else path.name
    expected = DATASETS[config.dataset].sha256 if config.dataset in DATASETS else None
    if expected and raw.sha256 != expected:
        warnings.warn(f"{path}: SHA-256 {raw.sha256} differs from the published {expected}; "
                      "results may not be comparable", stacklevel=2)
    return Dataset(name, str(path), raw, leave_one_out(raw, config.max_len))
