"""Caser (Tang & Wang 2018): horizontal and vertical convolutions over the last L items.

Differences from the original, both documented in docs/models.md: the "image" is the last
``window`` real items of the history (left-padded with the padding row when shorter), and
there is no user embedding, so the representation depends on the sequence only (contrastive
views and importance scores are per sequence, not per user).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import FastDropout, SequenceEncoder


class Caser(SequenceEncoder):
    def __init__(self, num_items: int, hidden_size: int = 64, window: int = 5, nv: int = 8,
                 nh: int = 16, dropout: float = 0.4, init_std: float = 0.02,
                 fast_dropout: bool = True, item_dropout: float = 0.0, tied_output: bool = True,
                 init: str = "normal"):
        super().__init__(num_items, hidden_size, init_std, item_dropout, tied_output, init,
                         fast_dropout)
        self.window = window
        self.conv_v = nn.Conv2d(1, nv, (window, 1))
        self.conv_h = nn.ModuleList(nn.Conv2d(1, nh, (h, hidden_size)) for h in range(1, window + 1))
        self.fc1 = nn.Linear(nv * hidden_size + nh * window, hidden_size)
        self.fc2 = nn.Linear(hidden_size, hidden_size)   # RecBole's fc2, without the user half
        self.drop = FastDropout(dropout, fast_dropout)
        self.init_weights()

    def last_window(self, emb: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, L, d] right-padded -> [B, window, d]: the last `window` real positions, oldest
        first, zero rows where the history is shorter."""
        B, L, d = emb.shape
        offs = torch.arange(self.window, device=emb.device) - self.window        # [-W..-1]
        idx = lengths.view(-1, 1) + offs.view(1, -1)                              # [B, W]
        valid = idx >= 0
        picked = emb.gather(1, idx.clamp(min=0).unsqueeze(-1).expand(-1, -1, d))
        return picked * valid.unsqueeze(-1)

    def encode_embedded(self, emb: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self._encode_windows(self.last_window(emb, lengths))

    def all_states(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, L] -> [B, L, d]: column j encodes the window of the `window` items ending at j
        (zero rows before the first item), all columns in one batched pass."""
        emb = self.embed_items(items)                                             # [B, L, d]
        B, L, d = emb.shape
        padded = F.pad(emb, (0, 0, self.window - 1, 0))                           # [B, L+W-1, d]
        windows = padded.unfold(1, self.window, 1).transpose(2, 3)                # [B, L, W, d]
        return self._encode_windows(windows.reshape(B * L, self.window, d)).view(B, L, -1)

    def _encode_windows(self, window: torch.Tensor) -> torch.Tensor:
        """[B, W, d] windows, oldest first -> [B, d]."""
        img = window.unsqueeze(1)                                                 # [B, 1, W, d]
        out_v = self.conv_v(img).flatten(1)                                       # [B, nv * d]
        out_h = [F.relu(conv(img)).squeeze(3).amax(dim=2) for conv in self.conv_h]  # W x [B, nh]
        z = torch.cat([out_v, *out_h], dim=1)
        return self.fc2(F.relu(self.fc1(self.drop(z))))                           # [B, d]

    @torch.no_grad()
    def occlusion_states(self, emb: torch.Tensor, lengths: torch.Tensor,
                         internal_batch_size: int = 1024) -> torch.Tensor:
        """Same contract as :meth:`SequenceEncoder.occlusion_states`. Only the last ``window``
        real positions reach the representation: occluding an earlier one leaves it unchanged,
        so ``window`` passes (one per window slot) cover every position."""
        if self.training:
            raise RuntimeError("occlusion_states needs eval mode (no dropout)")
        B, L, d = emb.shape
        clean = self.encode_embedded(emb, lengths)                                # [B, d]
        real = torch.arange(L, device=emb.device) < lengths.view(-1, 1)
        out = torch.where(real.unsqueeze(-1), clean.unsqueeze(1), 0.0)          # [B, L, d]
        rows = torch.arange(B, device=emb.device)
        for slot in range(self.window):
            pos = lengths - self.window + slot                                    # [B]
            keep = (pos >= 0).nonzero().squeeze(1)
            occluded = emb[keep].clone()
            occluded[torch.arange(len(keep), device=emb.device), pos[keep]] = 0.0
            out[rows[keep], pos[keep]] = self.encode_embedded(occluded, lengths[keep])
        return out
