"""SASRec (Kang & McAuley 2018) as in RecBole/upstream EC4SRec: post-LayerNorm blocks; and,
by config, the RecTools/eSASRec variant (docs/models.md): ``norm="pre"`` (each block's query
and FFN input layer-normed, residuals from the normed inputs, a final LayerNorm, no LayerNorm on
the input embeddings), ``positions="from_end"`` (position ids count back from the last real
item), ``ffn_activation="relu"``.

Every consumer of the encoder (training losses, evaluation, explainers) reads one state per
sequence: the last real position. So the last block runs on that position only (its keys and
values still come from every position): no queries, attention rows, output projection, residual
LayerNorm or FFN for the other L - 1 positions. :meth:`SASRec.hidden_states` is the plain
all-positions computation; the two agree to float rounding for any fixed dropout masks (tests).

Occlusion (:meth:`SASRec.occlusion_states`) uses causality: zeroing position i's item embedding
leaves every state before i unchanged in every block, so for each i only positions >= i are
recomputed, attending to cached keys and values of positions < i.
"""
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
    """Causal multi-head self-attention with its residual and LayerNorm.

    post (RecBole): out = LN(x_q + drop(W_o ctx)), queries, keys and values from x.
    pre (RecTools, the original SASRec code): out = LN(x_q) + drop(W_o ctx) with queries from
    LN(x_q) and keys/values from the un-normed x."""

    def __init__(self, d: int, heads: int, attn_dropout: float, dropout: float, fast: bool,
                 pre_norm: bool = False):
        super().__init__()
        self.pre_norm = pre_norm
        self.heads, self.head_dim = heads, d // heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.attn_drop = FastDropout(attn_dropout, fast)
        self.drop = FastDropout(dropout, fast)
        self.norm = nn.LayerNorm(d, eps=1e-12)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        """[B, L, d] -> [B, H, L, d / H]."""
        B, L, _ = t.shape
        return t.view(B, L, self.heads, self.head_dim).transpose(1, 2)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, L, d] -> keys, values [B, H, L, d / H] (the K and V thirds of ``qkv`` only)."""
        d = x.shape[-1]
        kv = F.linear(x, self.qkv.weight[d:], self.qkv.bias[d:])                 # [B, L, 2d]
        k, v = kv.split(d, dim=-1)
        return self._split(k), self._split(v)

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """[B, Q, d] -> [B, H, Q, d / H]."""
        d = x.shape[-1]
        return self._split(F.linear(x, self.qkv.weight[:d], self.qkv.bias[:d]))

    def attend(self, x_q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, blocked: torch.Tensor,
               need_weights: bool = False):
        """The block's attention for queries x_q [B, Q, d] (un-normed inputs) over keys/values
        k, v [B, H, K, dh] (from :meth:`keys_values`): -> [B, Q, d] (and weights)."""
        if self.pre_norm:
            x_q = self.norm(x_q)
        return self._attend(x_q, self.query(x_q), k, v, blocked, need_weights)

    def _attend(self, x_q: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                blocked: torch.Tensor, need_weights: bool):
        """Masked softmax attention + output projection + residual (+ LayerNorm when post).

        x_q [B, Q, d] (the queries' inputs; already normed when pre), q [B, H, Q, dh],
        k/v [B, H, K, dh], blocked: bool broadcastable to [B, H, Q, K], True where a key is
        hidden."""
        B, Q, d = x_q.shape
        weights = None
        if need_weights or (self.training and self.attn_drop.p > 0):
            # Explicit path: exposes the weights (attention explainer) and uses fast dropout.
            logits = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)          # [B, H, Q, K]
            weights = logits.masked_fill_(blocked, float("-inf")).softmax(-1)
            ctx = self.attn_drop(weights) @ v
        else:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=~blocked)
        ctx = ctx.transpose(1, 2).reshape(B, Q, d)
        out = x_q + self.drop(self.out(ctx))
        return (out if self.pre_norm else self.norm(out)), weights

    def forward(self, x: torch.Tensor, need_weights: bool = False):
        """All positions: [B, L, d] -> [B, L, d] (and [B, H, L, L] weights if asked)."""
        B, L, d = x.shape
        if self.pre_norm:
            x_q = self.norm(x)
            q, (k, v) = self.query(x_q), self.keys_values(x)
            if not need_weights and not (self.training and self.attn_drop.p > 0):
                ctx = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)
                return x_q + self.drop(self.out(ctx.reshape(B, L, d))), None
            return self._attend(x_q, q, k, v, future_mask(L, x.device), need_weights)
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if not need_weights and not (self.training and self.attn_drop.p > 0):
            ctx = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)
            return self.norm(x + self.drop(self.out(ctx.reshape(B, L, d)))), None
        return self._attend(x, q, k, v, future_mask(L, x.device), need_weights)

    def forward_last(self, x: torch.Tensor, lengths: torch.Tensor, need_weights: bool = False):
        """Only the query at position lengths - 1: [B, L, d] -> [B, 1, d] (weights [B, H, 1, L])."""
        k, v = self.keys_values(x)
        x_last = last_real(x, lengths).unsqueeze(1)                              # [B, 1, d]
        blocked = (torch.arange(x.shape[1], device=x.device) >= lengths.view(-1, 1))
        return self.attend(x_last, k, v, blocked.view(-1, 1, 1, x.shape[1]), need_weights)


class FeedForward(nn.Module):
    """Position-wise FFN with residual. post: LN(x + drop(fc2(act(fc1(x))))). pre (RecTools):
    y = LN(x); y + drop(fc2(drop(act(fc1(y)))))."""

    def __init__(self, d: int, inner: int, dropout: float, fast: bool, pre_norm: bool = False,
                 activation: str = "gelu"):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, inner), nn.Linear(inner, d)
        self.drop = FastDropout(dropout, fast)
        self.norm = nn.LayerNorm(d, eps=1e-12)
        self.pre_norm = pre_norm
        self.act = F.gelu if activation == "gelu" else F.relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            y = self.norm(x)
            return y + self.drop(self.fc2(self.drop(self.act(self.fc1(y)))))
        return self.norm(x + self.drop(self.fc2(self.act(self.fc1(x)))))


class SASRec(SequenceEncoder):
    has_attention = True

    def __init__(self, num_items: int, max_len: int, hidden_size: int = 64, num_layers: int = 2,
                 num_heads: int = 2, inner_size: int = 256, dropout: float = 0.5,
                 attn_dropout: float = 0.5, init_std: float = 0.02, fast_dropout: bool = True,
                 item_dropout: float = 0.0, tied_output: bool = True, init: str = "normal",
                 norm: str = "post", positions: str = "from_start", ffn_activation: str = "gelu"):
        super().__init__(num_items, hidden_size, init_std, item_dropout, tied_output, init,
                         fast_dropout)
        pre = norm == "pre"
        self.pre_norm, self.from_end = pre, positions == "from_end"
        self.pos_emb = nn.Embedding(max_len, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=1e-12)     # post: on the input; pre: final
        self.drop = FastDropout(dropout, fast_dropout)
        self.attn = nn.ModuleList(SelfAttention(hidden_size, num_heads, attn_dropout, dropout,
                                                fast_dropout, pre) for _ in range(num_layers))
        self.ffn = nn.ModuleList(FeedForward(hidden_size, inner_size, dropout, fast_dropout, pre,
                                             ffn_activation) for _ in range(num_layers))
        self.init_weights()

    def _positions(self, lengths: torch.Tensor | None, width: int, start: int = 0) -> torch.Tensor:
        """Position embeddings of columns start..start + width: [width, d] counted from the
        start, or [B, width, d] counted back from each row's last real item (from_end;
        padding columns get position 0, they are never read)."""
        if not self.from_end:
            return self.pos_emb.weight[start:start + width]
        if lengths is None:
            raise ValueError("positions=from_end needs the row lengths")
        cols = torch.arange(start, start + width, device=lengths.device)
        ids = (lengths.view(-1, 1) - 1 - cols.view(1, -1)).clamp(min=0)       # [B, width]
        return self.pos_emb(ids)

    def _input(self, emb: torch.Tensor, start: int = 0,
               lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Item embeddings [B, L, d] of positions start.. -> block input: + position, LN (post
        only), dropout."""
        x = emb + self._positions(lengths, emb.shape[1], start)
        return self.drop(x if self.pre_norm else self.norm(x))

    def _output(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's output -> the representation (pre: the final LayerNorm)."""
        return self.norm(x) if self.pre_norm else x

    def encode_embedded(self, emb: torch.Tensor, lengths: torch.Tensor,
                        return_attention: bool = False):
        """[B, L, d] -> [B, d], the state at position lengths - 1, the last block on that
        position only. ``return_attention``: also a list of per-block weights, [B, H, L, L] for
        every block but the last, [B, H, 1, L] (the last real query's row) for the last."""
        x = self._input(emb, lengths=lengths)                                    # [B, L, d]
        attentions = []
        last = len(self.attn) - 1
        for i, (attn, ffn) in enumerate(zip(self.attn, self.ffn)):
            if i < last:
                x, weights = attn(x, need_weights=return_attention)
            else:
                x, weights = attn.forward_last(x, lengths, need_weights=return_attention)
            x = ffn(x)
            attentions.append(weights)
        h = self._output(x.squeeze(1))                                           # [B, d]
        return (h, attentions) if return_attention else h

    def hidden_states(self, emb: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The plain computation: every block on every position, [B, L, d] -> [B, L, d]
        (``lengths`` [B] needed with positions=from_end: then every column is positioned
        relative to the row's last real item, as in RecTools' shifted-sequence training)."""
        x = self._input(emb, lengths=lengths)
        for attn, ffn in zip(self.attn, self.ffn):
            x = ffn(attn(x)[0])
        return self._output(x)

    def all_states(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, L] -> [B, L, d], one pass over all positions. Column j equals
        ``forward(items[:, :j + 1], j + 1)`` with positions=from_start; with from_end every
        column is positioned relative to the row's last real item (not to j), as RecTools
        trains."""
        return self.hidden_states(self.embed_items(items), lengths)

    @torch.no_grad()
    def occlusion_states(self, emb: torch.Tensor, lengths: torch.Tensor,
                         internal_batch_size: int = 1024) -> torch.Tensor:
        """[B, L, d] -> [B, L, d]: row b, column i is the representation of sequence b with
        position i's item embedding zeroed (columns >= lengths[b] are 0). Eval mode only.

        For each i, the rows longer than i recompute positions i.. of every block; their
        queries attend to the clean keys/values of positions < i (unchanged by causality)
        followed by the recomputed ones. Work: sum_i (L - i) positions per block instead of
        L * L for one full forward per occluded copy. Rows are processed in length order, so
        the rows longer than i are a contiguous slice (views, no gathers)."""
        if self.training:
            raise RuntimeError("occlusion_states needs eval mode (no dropout)")
        B, L, d = emb.shape
        order = torch.argsort(lengths, stable=True)
        emb, lengths = emb[order], lengths[order]
        last = len(self.attn) - 1
        x = self._input(emb, lengths=lengths)
        clean, work = [], []                          # per block: clean and working (K, V)
        for j, (attn, ffn) in enumerate(zip(self.attn, self.ffn)):
            kv = attn.keys_values(x)
            clean.append(kv)
            work.append(tuple(t.clone() for t in kv))
            if j < last:
                x = ffn(attn(x)[0])
        out = emb.new_zeros(B, L, d)
        pos = torch.arange(L, device=emb.device)
        counts = torch.bincount(lengths, minlength=L + 1).tolist()
        first = 0                                      # first row with length > i
        for i in range(int(lengths[-1])):
            first += counts[i]
            n = lengths[first:]
            seg = emb[first:, i:].clone()                                              # [b, m, d]
            seg[:, 0] = 0.0
            xs = self._input(seg, start=i, lengths=n)
            for j, (attn, ffn) in enumerate(zip(self.attn, self.ffn)):
                k, v = work[j]
                k_new, v_new = attn.keys_values(xs)
                k[first:, :, i:], v[first:, :, i:] = k_new, v_new     # positions < i stay clean
                k_rows, v_rows = k[first:], v[first:]
                if j < last:
                    blocked = pos.view(1, -1) > pos[i:].view(-1, 1)                    # [m, L]
                    xs, _ = attn.attend(xs, k_rows, v_rows, blocked)
                else:
                    x_q = xs.gather(1, (n - 1 - i).view(-1, 1, 1).expand(-1, 1, d))     # [b, 1, d]
                    blocked = (pos.view(1, -1) >= n.view(-1, 1)).view(-1, 1, 1, L)
                    xs, _ = attn.attend(x_q, k_rows, v_rows, blocked)
                xs = ffn(xs)
                k[first:, :, i], v[first:, :, i] = clean[j][0][first:, :, i], clean[j][1][first:, :, i]
            out[first:, i] = self._output(xs.squeeze(1))
        return out[torch.argsort(order)]
