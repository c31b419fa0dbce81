"""Shared helpers of the tuning tests (no tests here): tiny configs, method availability,
a Ray fixture reused by every module in the session."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

from ec4srec.config import Config  # noqa: E402

TINY = ["data.dataset=synthetic", "model.hidden_size=16", "model.num_layers=1", "model.inner_size=32",
        "train.batch_size=256", "train.threads=1", "train.progress='off'", "train.tensorboard=false"]
CONTRASTIVE = ["cl4srec", "duorec", "ec4srec_ssl", "ec4srec_sl", "ec4srec"]
GUIDED = ["ec4srec_ssl", "ec4srec_sl", "ec4srec"]


def tiny_config(method: str = "sasrec", epochs: int = 3, extra: list[str] | None = None) -> Config:
    updates = max(1, min(5, epochs - 1))            # the default p must fit the tiny budget
    return Config().with_overrides([*TINY, f"method.name={method}", f"train.epochs={epochs}",
                                    f"method.updates={updates}", *(extra or [])])


def require_method(method: str) -> None:
    """Skip the test while ``method`` is not implemented yet (build_method raises)."""
    if method == "sasrec":
        return
    from ec4srec.data import load_dataset
    from ec4srec.trainer import Trainer
    config = tiny_config(method, epochs=10)
    try:
        Trainer(config, load_dataset(config.data), log=lambda m: None)
    except (ImportError, NotImplementedError) as exc:
        pytest.skip(f"method {method} not available yet: {exc}")


def ray_session():
    """Start (once per process) a 2-CPU local Ray; tests needing Ray call this via a fixture."""
    import ray
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0"}})
    return ray
