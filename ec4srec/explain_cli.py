"""``ec4srec explain``: importance scores of users' latest histories, as CSV.

Documented choices:
- A user's explained history is their whole sequence truncated to its last ``max_len`` items:
  what a deployed model would use to recommend the next item (it includes the validation and
  test items). The explained output is the model's predicted next item (the paper's y_u).
- ``users`` are file user ids; None (or an empty list) means every user, in file order.
  Repeated ids are written once. An id not in the dataset (users skipped for having < 3 items
  included) raises :class:`ec4srec.errors.CLIError` naming it.
- CSV header ``user,position,item,score``; position is 0-based within the truncated history,
  oldest first. Written atomically; :func:`check_output` refuses an output path that cannot
  be a file before the run is loaded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .checkpoint import atomic_write_text
from .config import EXPLAINERS
from .data.batches import eval_order, gather_histories
from .errors import CLIError
from .explain import explain_batch
from .registry import explainer_backbones, explainer_fits


def check_output(output: Path) -> None:
    """Refuse an ``--output`` that cannot become a file (a directory, or below a file) before
    any work is done; raises CLIError naming it."""
    if output.is_dir():
        raise CLIError(f"--output {output}: is a directory, not a file path")
    blocker = next((p for p in output.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise CLIError(f"--output {output}: {blocker} is a file, not a directory")


def write_explanations(trainer, users: list[int] | None, explainer: str | None,
                       output: Path) -> int:
    """Explain each selected user's latest history with ``explainer`` (None: the run's
    method.explainer); write the CSV to ``output``; return the number of data rows."""
    raw, data, method = trainer.dataset.raw, trainer.data, trainer.config.method
    model = trainer.model
    explainer = explainer or method.explainer
    if explainer not in EXPLAINERS:
        raise CLIError(f"unknown explainer {explainer!r}; expected one of {EXPLAINERS}")
    backbone = trainer.config.model.backbone
    if not explainer_fits(explainer, backbone):
        raise CLIError(f"the {explainer} explainer needs a backbone with {explainer} "
                       f"({'|'.join(explainer_backbones(explainer))}); {backbone} has none")

    index = {int(u): i for i, u in enumerate(raw.user_ids)}
    if users:
        missing = [u for u in users if int(u) not in index]
        if missing:
            raise CLIError(f"unknown user id {missing[0]} (not in {trainer.dataset.name}"
                           f"{'; users with < 3 items are skipped' if raw.skipped_short else ''})")
        selected = np.array([index[int(u)] for u in dict.fromkeys(users)], dtype=np.int64)
    else:
        selected = np.arange(len(raw.user_ids), dtype=np.int64)

    # Examples-like addressing without copies: history = items[end - length : end], with end one
    # past the user's last item. gather_histories reads only inside the history (make_batch
    # would also read items[end] as a target, which may be past the array), so we batch here.
    end = raw.offsets[selected + 1]                                           # [S]
    length = np.minimum(raw.lengths[selected], data.max_len)                  # [S]
    scores = np.zeros((len(selected), data.max_len), dtype=np.float32)        # [S, max_len]
    bs = trainer.config.method.explain_batch_size
    for rows in eval_order(length, bs):
        items = torch.from_numpy(gather_histories(data.items, end[rows], length[rows]))
        lengths = torch.from_numpy(length[rows])
        s = explain_batch(model, items.to(trainer.device), lengths.to(trainer.device), explainer,
                          None, method.ig_steps, bs, method.occlusion_sign)    # [b, L]
        scores[rows, :s.shape[1]] = s.cpu().numpy()

    lines = ["user,position,item,score"]
    for r, u in enumerate(selected):
        n = int(length[r])
        hist = data.items[end[r] - n:end[r]]
        uid = int(raw.user_ids[u])
        lines.extend(f"{uid},{p},{int(hist[p])},{float(scores[r, p]):.8g}" for p in range(n))
    atomic_write_text(output, "\n".join(lines) + "\n")
    return len(lines) - 1
