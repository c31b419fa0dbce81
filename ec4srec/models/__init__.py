"""Backbones behind one interface: see :class:`SequenceEncoder`."""
from __future__ import annotations

from ..config import ModelConfig
from .base import FastDropout, SequenceEncoder, bank_origins, refresh_dropout_banks, restore_banks
from .caser import Caser
from .gru4rec import GRU4Rec
from .sasrec import SASRec

__all__ = ["Caser", "FastDropout", "GRU4Rec", "SASRec", "SequenceEncoder", "build_model",
           "refresh_dropout_banks", "bank_origins", "restore_banks"]


def build_model(config: ModelConfig, num_items: int, max_len: int) -> SequenceEncoder:
    shared = dict(item_dropout=config.item_dropout, tied_output=config.tied_output, init=config.init)
    if config.backbone == "sasrec":
        return SASRec(num_items, max_len, config.hidden_size, config.num_layers, config.num_heads,
                      config.inner_size, config.dropout, config.attn_dropout, config.init_std,
                      config.fast_dropout, norm=config.norm, positions=config.positions,
                      ffn_activation=config.ffn_activation, **shared)
    if config.backbone == "gru4rec":
        return GRU4Rec(num_items, config.hidden_size, config.gru_hidden_size, config.gru_dropout,
                       config.init_std, config.fast_dropout, num_layers=config.gru_layers,
                       **shared)
    if config.backbone == "caser":
        return Caser(num_items, config.hidden_size, config.caser_window, config.caser_nv,
                     config.caser_nh, config.caser_dropout, config.init_std, config.fast_dropout,
                     **shared)
    raise ValueError(f"unknown backbone {config.backbone!r}")
