"""SASRec (Kang & McAuley 2018) as in RecBole/upstream EC4SRec: post-LayerNorm blocks."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .base import FastDropout, SequenceEncoder, last_real


_FUTURE: dict[tuple[int, torch.device], torch.Tensor] = {}


def future_mask(L: int, device: torch.device) -> torch.Tensor:
    """[L, L] bool, True above the diagonal (keys after the query), cached per (L, device)."""
    key = (L, device)
    mask = _FUTURE.get(key)
    if mask is None:
        with torch.inference_mode(False):     # a normal tensor even when built under eval
            mask = torch.ones(L, L, dtype=torch.bool, device=device).triu(1)
        _FUTURE[key] = mask
    return mask


class SelfAttention(nn.Module):
    def __init__(self, d: int, heads: int, attn_dropout: float, dropout: float, fast: bool):
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.attn_drop = FastDropout(attn_dropout, fast)
        self.drop = FastDropout(dropout, fast)
        self.norm = nn.LayerNorm(d, eps=1e-12)

    def forward(self, x: torch.Tensor, need_weights: bool = False):
        B, L, d = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        weights = None
        if need_weights or (self.training and self.attn_drop.p > 0):
            # Explicit path: exposes the weights (attention explainer) and uses fast dropout.
            logits = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)     # [B, H, L, L]
            weights = logits.masked_fill_(future_mask(L, x.device), float("-inf")).softmax(-1)
            ctx = self.attn_drop(weights) @ v
        else:
            ctx = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        ctx = ctx.transpose(1, 2).reshape(B, L, d)
        return self.norm(x + self.drop(self.out(ctx))), weights


class FeedForward(nn.Module):
    def __init__(self, d: int, inner: int, dropout: float, fast: bool):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, inner), nn.Linear(inner, d)
        self.drop = FastDropout(dropout, fast)
        self.norm = nn.LayerNorm(d, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.drop(self.fc2(F.gelu(self.fc1(x)))))


class SASRec(SequenceEncoder):
    has_attention = True

    def __init__(self, num_items: int, max_len: int, hidden_size: int = 64, num_layers: int = 2,
                 num_heads: int = 2, inner_size: int = 256, dropout: float = 0.5,
                 attn_dropout: float = 0.5, init_std: float = 0.02, fast_dropout: bool = True):
        super().__init__(num_items, hidden_size, init_std)
        self.pos_emb = nn.Embedding(max_len, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=1e-12)
        self.drop = FastDropout(dropout, fast_dropout)
        self.attn = nn.ModuleList(SelfAttention(hidden_size, num_heads, attn_dropout, dropout,
                                                fast_dropout) for _ in range(num_layers))
        self.ffn = nn.ModuleList(FeedForward(hidden_size, inner_size, dropout, fast_dropout)
                                 for _ in range(num_layers))
        self.init_weights()

    def encode_embedded(self, emb: torch.Tensor, lengths: torch.Tensor,
                        return_attention: bool = False):
        L = emb.shape[1]
        x = self.drop(self.norm(emb + self.pos_emb.weight[:L]))          # [B, L, d]
        attentions = []
        for attn, ffn in zip(self.attn, self.ffn):
            x, weights = attn(x, need_weights=return_attention)
            x = ffn(x)
            attentions.append(weights)
        h = last_real(x, lengths)                                         # [B, d]
        return (h, attentions) if return_attention else h
