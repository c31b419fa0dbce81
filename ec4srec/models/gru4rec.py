"""GRU4Rec (Hidasi et al. 2016) as in RecBole: embedding dropout, one GRU layer, dense to d."""
from __future__ import annotations

import torch
from torch import nn

from .base import FastDropout, SequenceEncoder, last_real


class GRU4Rec(SequenceEncoder):
    def __init__(self, num_items: int, hidden_size: int = 64, gru_hidden_size: int = 128,
                 dropout: float = 0.3, init_std: float = 0.02, fast_dropout: bool = True):
        super().__init__(num_items, hidden_size, init_std)
        self.drop = FastDropout(dropout, fast_dropout)
        self.gru = nn.GRU(hidden_size, gru_hidden_size, num_layers=1, batch_first=True, bias=False)
        self.dense = nn.Linear(gru_hidden_size, hidden_size)
        self.init_weights()
        for name, param in self.gru.named_parameters():      # RecBole: xavier GRU weights
            nn.init.xavier_uniform_(param)

    def encode_embedded(self, emb: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # Right padding: the state at lengths - 1 has never seen a padding step.
        out, _ = self.gru(self.drop(emb))                      # [B, L, H]
        return self.dense(last_real(out, lengths))            # [B, d]
