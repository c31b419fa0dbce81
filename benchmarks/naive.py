"""A naive SASRec baseline, written the way a straightforward PyTorch user would.

Same sizes as the package's default SASRec (hidden 64, 2 layers, 2 heads, FFN 256, dropout 0.5
on embeddings, attention weights and hidden states, post-LayerNorm blocks) but none of the
package's speed work:

- every batch is padded to ``max_len`` = 50 (left padding, the last position holds the last
  item), not trimmed to its longest history, and batches are not length-bucketed;
- ``nn.Dropout`` (a fresh Bernoulli mask per call) instead of the bank-window FastDropout;
- standard attention: separate q/k/v projections, a causal + key-padding mask, softmax,
  dropout, weighted sum;
- plain full-softmax ``F.cross_entropy(h @ E[1:N+1].T, targets - 1)``;
- ``torch.optim.Adam`` with the single-tensor (for-loop) implementation, not fused;
- evaluation scores every user against all items in batches of 256 and ranks with two
  comparison passes (``>`` and ``==``), pessimistic ties like the package.

Batches are still built with vectorised numpy gathers (the same rows as the package's batches),
so the comparison isolates model, loss and optimizer, not Python data loading.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class NaiveBlock(nn.Module):
    def __init__(self, d: int, heads: int, inner: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.o = nn.Linear(d, d)
        self.attn_drop = nn.Dropout(attn_dropout)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d, eps=1e-12)
        self.norm2 = nn.LayerNorm(d, eps=1e-12)
        self.fc1, self.fc2 = nn.Linear(d, inner), nn.Linear(inner, d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, d = x.shape
        hd = d // self.heads

        def split(t):
            return t.view(B, L, self.heads, hd).transpose(1, 2)          # [B, H, L, hd]

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)                # [B, H, L, L]
        scores = scores.masked_fill(~mask, -1e9)
        attn = self.attn_drop(torch.softmax(scores, dim=-1))
        ctx = (attn @ v).transpose(1, 2).reshape(B, L, d)
        x = self.norm1(x + self.drop1(self.o(ctx)))
        return self.norm2(x + self.drop2(self.fc2(F.gelu(self.fc1(x)))))


class NaiveSASRec(nn.Module):
    def __init__(self, num_items: int, max_len: int = 50, d: int = 64, layers: int = 2,
                 heads: int = 2, inner: int = 256, dropout: float = 0.5,
                 attn_dropout: float = 0.5, init_std: float = 0.02):
        super().__init__()
        self.num_items, self.max_len = num_items, max_len
        self.item_emb = nn.Embedding(num_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len, d)
        self.norm = nn.LayerNorm(d, eps=1e-12)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(NaiveBlock(d, heads, inner, dropout, attn_dropout)
                                    for _ in range(layers))
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, init_std)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """items [B, max_len], left-padded with 0 -> [B, d] state at the last position."""
        B, L = items.shape
        pos = torch.arange(L, device=items.device).unsqueeze(0).expand(B, L)
        x = self.drop(self.norm(self.item_emb(items) + self.pos_emb(pos)))
        causal = torch.tril(torch.ones(L, L, dtype=torch.bool, device=items.device))
        mask = causal.unsqueeze(0).unsqueeze(0) & (items > 0).unsqueeze(1).unsqueeze(2)
        for block in self.blocks:
            x = block(x, mask)
        return x[:, -1, :]

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.item_emb.weight[1:].T


def padded_batch(items: np.ndarray, end: np.ndarray, length: np.ndarray, max_len: int = 50):
    """Histories left-padded to exactly ``max_len`` columns, and the targets."""
    cols = np.arange(max_len, dtype=np.int64) - max_len                 # -L .. -1
    idx = end[:, None] + cols[None, :]
    valid = cols[None, :] >= -length[:, None]
    hist = np.where(valid, items[np.where(valid, idx, 0)], 0)
    return torch.from_numpy(hist), torch.from_numpy(items[end])


def make_optimizer(model: nn.Module, lr: float = 1e-3) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=lr, foreach=False, fused=False)


def train_step(model: NaiveSASRec, opt: torch.optim.Optimizer, items: np.ndarray,
               end: np.ndarray, length: np.ndarray) -> float:
    hist, targets = padded_batch(items, end, length, model.max_len)
    logits = model.scores(model(hist))
    loss = F.cross_entropy(logits, targets - 1)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


@torch.no_grad()
def evaluate_ranks(model: NaiveSASRec, items: np.ndarray, end: np.ndarray, length: np.ndarray,
                   batch_size: int = 256) -> np.ndarray:
    model.eval()
    ranks = []
    for start in range(0, len(end), batch_size):
        sl = slice(start, start + batch_size)
        hist, targets = padded_batch(items, end[sl], length[sl], model.max_len)
        scores = model.scores(model(hist))
        t = scores.gather(1, (targets - 1).view(-1, 1))
        ranks.append((1 + (scores > t).sum(1) + (scores == t).sum(1) - 1).numpy())
    model.train()
    return np.concatenate(ranks)
