"""The paper study's GPU-hour estimate from costs this project measured (no Ray here).

Inputs:
- the measured CPU costs, ``results/costs/paper-costs.json`` (``benchmarks/paper_costs.py``): one
  thread's seconds per training epoch of each (dataset, backbone, method), per validation pass
  of each (dataset, backbone), per importance update of each (dataset, backbone, explainer);
- a GPU factor: how many times faster a trial's epoch runs on its GPU share than on one CPU
  thread. Measured by ``benchmarks/gpu_check.sh`` where a GPU is lent (it writes
  ``results/costs/gpu-factor.json``); until then :data:`ASSUMED_GPU_FACTOR`, printed as an
  assumption.

The model (each choice stated where the plan is printed):
- a trial trains the ASHA prior's share of N epochs (``cost.PRIOR_FRACTION``, as the budget
  does before it has measured any trial), each a training epoch plus a validation pass;
- a guided trial also runs the importance updates its schedule places in those epochs
  (``schedule.update_epochs`` with the default p), each at the mean cost of the explainers the
  search can pick for the backbone;
- a run's trials: as many as fit its share of the budget on the cluster's trial slots, at most
  ``--num-samples``, at least one; seed re-runs (``--seeds``) train as long as a trial;
- GPU-hours = trial seconds x trials x GPUs per trial: a packed trial is assumed to keep its
  solo speed, which makes the estimate a lower bound when trials contend for a GPU.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from ..config import EXPLAINERS, METHODS, Config
from ..registry import GUIDED
from ..schedule import update_epochs
from .cost import PRIOR_FRACTION

ROOT = Path(__file__).resolve().parents[2]
COSTS = ROOT / "results" / "costs" / "paper-costs.json"
GPU_FACTOR = ROOT / "results" / "costs" / "gpu-factor.json"
# No GPU has been lent to this project yet. A one-thread CPU epoch of these small models
# (d = 64, two blocks, batch 256) is dominated by the full-softmax matmul and the attention;
# on a GPU the same step is bound by kernel launches (~10^2 kernels of a few microseconds), so
# speed-ups of 5-20x per trial are typical for models this small; 8 is the assumption.
ASSUMED_GPU_FACTOR = 8.0


class CostsError(ValueError):
    """A costs or factor file that cannot be used (names the file and the key)."""


def load_costs(path: Path) -> dict[str, Any]:
    """The measured costs file, checked for the tables the estimate reads."""
    try:
        costs = json.loads(Path(path).read_text())
    except OSError as exc:
        raise CostsError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise CostsError(f"{path}: not JSON (line {exc.lineno}: {exc.msg})") from None
    for key in ("epoch", "eval_s", "update_s"):
        if not isinstance(costs.get(key), dict):
            raise CostsError(f"{path}: no {key!r} table (written by benchmarks/paper_costs.py)")
    return costs


def gpu_factor(override: float | None, path: Path = GPU_FACTOR) -> tuple[float, str]:
    """The factor and where it comes from: ``--gpu-factor``, the measured file, or the
    assumption."""
    if override is not None:
        if override <= 0:
            raise CostsError(f"--gpu-factor must be > 0, got {override}")
        return override, "given by --gpu-factor"
    if path.exists():
        try:
            measured = json.loads(path.read_text())
            factor = float(measured["factor"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CostsError(f"{path}: no usable 'factor' ({type(exc).__name__}: {exc})") from None
        return factor, (f"measured by benchmarks/gpu_check.sh on {measured.get('gpu', '?')} "
                        f"({path.name}, commit {measured.get('commit', '?')})")
    return ASSUMED_GPU_FACTOR, ("ASSUMED, not measured: no GPU has been lent; "
                                "benchmarks/gpu_check.sh measures it")


def trial_seconds(costs: dict, dataset: str, backbone: str, method: str, epochs: int,
                  factor: float) -> float | None:
    """GPU seconds of one expected trial of (dataset, backbone, method), None if unmeasured."""
    epoch = costs["epoch"].get(f"{dataset}/{backbone}/{method}")
    valid = costs["eval_s"].get(f"{dataset}/{backbone}")
    if epoch is None or valid is None:
        return None
    trained = max(1, round(PRIOR_FRACTION * epochs))
    seconds = trained * (float(epoch["epoch_s"]) + float(valid))
    if method in GUIDED:
        explainers = [costs["update_s"].get(f"{dataset}/{backbone}/{e}") for e in EXPLAINERS]
        measured = [float(u) for u in explainers if u is not None]
        if not measured:
            return None
        updates = [e for e in update_epochs(epochs, Config().method.updates) if e <= trained]
        seconds += len(updates) * statistics.fmean(measured)
    return seconds / factor


def estimate(costs: dict, dataset: str, backbone: str, *, epochs: int, per_run_s: float,
             slots: int, num_samples: int, seeds: int, gpus_per_trial: float,
             factor: float) -> dict[str, Any]:
    """Per method ``{"trials", "trial_s", "gpu_hours"}`` (None where unmeasured) and the
    study's ``gpu_hours`` over the measured methods, with ``missing`` naming the others."""
    methods, missing, total = {}, [], 0.0
    for method in METHODS:
        trial_s = trial_seconds(costs, dataset, backbone, method, epochs, factor)
        if trial_s is None:
            methods[method] = None
            missing.append(method)
            continue
        trials = max(1, min(num_samples, int(per_run_s * slots / trial_s)))
        hours = (trials + seeds) * trial_s * gpus_per_trial / 3600
        methods[method] = {"trials": trials, "trial_s": trial_s, "gpu_hours": hours}
        total += hours
    return {"methods": methods, "gpu_hours": total, "missing": missing}
