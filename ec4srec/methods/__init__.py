"""Training objectives: which losses a method combines, and the state it keeps.

A method turns a batch into a scalar loss and may keep state that must survive a checkpoint
(the EC4SRec variants keep importance scores). The trainer calls, in this order per epoch:
``on_epoch_start(epoch)`` (importance updates happen here), ``loss(batch)`` per batch.
"""
from __future__ import annotations

from ..config import Config
from ..data.split import SplitData
from .base import Method, RecOnly


def build_method(config: Config, data: SplitData, model) -> Method:
    name = config.method.name
    if name == "sasrec":
        return RecOnly(config, data, model)
    from .contrastive import build_contrastive   # the contrastive methods and explainers
    return build_contrastive(config, data, model)


__all__ = ["Method", "RecOnly", "build_method"]
