"""GRU4Rec (Hidasi et al. 2016) as in RecBole: embedding dropout, ``num_layers`` stacked GRU
layers (1 by default, the paper's), dense to d."""
from __future__ import annotations

import torch
from torch import nn

from .base import FastDropout, SequenceEncoder, last_real


class GRU4Rec(SequenceEncoder):
    def __init__(self, num_items: int, hidden_size: int = 64, gru_hidden_size: int = 128,
                 dropout: float = 0.3, init_std: float = 0.02, fast_dropout: bool = True,
                 item_dropout: float = 0.0, tied_output: bool = True, init: str = "normal",
                 num_layers: int = 1):
        super().__init__(num_items, hidden_size, init_std, item_dropout, tied_output, init,
                         fast_dropout)
        self.drop = FastDropout(dropout, fast_dropout)
        self.gru = nn.GRU(hidden_size, gru_hidden_size, num_layers=num_layers, batch_first=True,
                          bias=False)
        self.dense = nn.Linear(gru_hidden_size, hidden_size)
        self.init_weights()
        for name, param in self.gru.named_parameters():      # RecBole: xavier GRU weights
            nn.init.xavier_uniform_(param)

    def encode_embedded(self, emb: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # Right padding: the state at lengths - 1 has never seen a padding step.
        out, _ = self.gru(self.drop(emb))                      # [B, L, H]
        return self.dense(last_real(out, lengths))            # [B, d]

    def all_states(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, L] -> [B, L, d]: the GRU is causal, so one pass gives every prefix's state."""
        out, _ = self.gru(self.drop(self.embed_items(items)))  # [B, L, H]
        return self.dense(out)

    @torch.no_grad()
    def occlusion_states(self, emb: torch.Tensor, lengths: torch.Tensor,
                         internal_batch_size: int = 1024) -> torch.Tensor:
        """Same contract as :meth:`SequenceEncoder.occlusion_states`. Zeroing position i leaves
        the GRU state before i unchanged: for each i the rows longer than i restart the GRU
        from their clean state at i - 1 (every layer's) and run positions i.. only."""
        if self.training:
            raise RuntimeError("occlusion_states needs eval mode (no dropout)")
        B, L, d = emb.shape
        layers, H = self.gru.num_layers, self.gru.hidden_size
        clean, _ = self.gru(emb)                                              # [B, L, H]
        out = emb.new_zeros(B, L, d)
        for i in range(int(lengths.max())):
            rows = (lengths > i).nonzero().squeeze(1)
            seg = emb[rows, i:].clone()                                       # [b, m, d]
            seg[:, 0] = 0.0
            if i == 0:
                h0 = emb.new_zeros(layers, len(rows), H)
            elif layers == 1:                     # the top layer's output is its state
                h0 = clean[rows, i - 1].unsqueeze(0)
            else:                                 # every layer's state after positions < i
                h0 = self.gru(emb[rows, :i])[1]                               # [layers, b, H]
            states, _ = self.gru(seg, h0.contiguous())                        # [b, m, H]
            last = states.gather(1, (lengths[rows] - 1 - i).view(-1, 1, 1).expand(-1, 1, states.shape[-1]))
            out[rows, i] = self.dense(last.squeeze(1))
        return out
