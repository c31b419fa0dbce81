"""The encoder interface every backbone implements, and a fast dropout.

Item table layout: row 0 = padding, rows 1..num_items = items, row num_items + 1 = the [mask]
token used by mask augmentations. Scores are dot products with rows 1..num_items only, so
padding and [mask] are never recommended; column j of a score matrix is item j + 1.
"""
from __future__ import annotations

import torch
from torch import nn


class SequenceEncoder(nn.Module):
    """item ids [B, L] + lengths [B] -> sequence representation [B, d].

    Subclasses implement :meth:`encode_embedded`, which takes the *item embeddings* (what the
    explainers perturb) so that attribution methods can differentiate through them.
    """

    has_attention = False

    def __init__(self, num_items: int, hidden_size: int, init_std: float = 0.02):
        super().__init__()
        self.num_items = num_items
        self.mask_token = num_items + 1
        self.hidden_size = hidden_size
        self.init_std = init_std
        self.item_emb = nn.Embedding(num_items + 2, hidden_size, padding_idx=0)

    def embed_items(self, items: torch.Tensor) -> torch.Tensor:
        return self.item_emb(items)                              # [B, L, d]

    def encode_embedded(self, emb: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError                                # -> [B, d]

    def forward(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.encode_embedded(self.embed_items(items), lengths)

    def item_matrix(self) -> torch.Tensor:
        return self.item_emb.weight[1:self.num_items + 1]        # [N, d]

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.item_matrix().T                           # [B, N]

    def init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.data.normal_(0.0, self.init_std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.data.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.data.fill_(1.0)
                module.bias.data.zero_()
        with torch.no_grad():
            self.item_emb.weight[0].zero_()


def last_real(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[B, L, d] right-padded states -> [B, d] state at position lengths - 1."""
    idx = (lengths - 1).view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
    return hidden.gather(1, idx).squeeze(1)


class FastDropout(nn.Module):
    """Inverted dropout whose masks are windows of a pre-drawn random bank.

    Drawing a fresh Bernoulli mask per call was ~40 % of a SASRec step on our CPU. Instead a
    bank of ``bank_size`` keep/drop multipliers is drawn from torch's RNG (once per epoch via
    :func:`refresh_dropout_banks`, or lazily) and each call multiplies by a window at a random
    offset. Each element is still dropped with probability p; masks of different calls are
    windows of the same bank (shifted), which is the only approximation. Deterministic under
    the torch seed. ``fast=False`` falls back to ``nn.functional.dropout``.
    """

    bank_size = 1 << 22

    def __init__(self, p: float, fast: bool = True):
        super().__init__()
        self.p = float(p)
        self.fast = fast
        self._bank: torch.Tensor | None = None

    def refresh(self, device: torch.device | None = None) -> None:
        device = device or (self._bank.device if self._bank is not None else torch.device("cpu"))
        keep = torch.rand(self.bank_size, device=device) >= self.p
        self._bank = keep.float().mul_(1.0 / (1.0 - self.p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if not self.fast:
            return nn.functional.dropout(x, self.p, True)
        n = x.numel()
        if self._bank is None or self._bank.device != x.device or n > self.bank_size:
            self.bank_size = max(self.bank_size, n)
            self.refresh(x.device)
        offset = int(torch.randint(0, self.bank_size - n + 1, (1,)))
        return x * self._bank[offset:offset + n].view_as(x)

    def extra_repr(self) -> str:
        return f"p={self.p}, fast={self.fast}"


def refresh_dropout_banks(model: nn.Module) -> None:
    """Redraw every FastDropout bank from the current torch RNG state (call at epoch start so a
    resumed run draws the same masks as an uninterrupted one)."""
    for module in model.modules():
        if isinstance(module, FastDropout) and module.fast:
            module.refresh(next(model.parameters()).device)
