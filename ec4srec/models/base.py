"""The encoder interface every backbone implements, and a fast dropout.

Item table layout: row 0 = padding, rows 1..num_items = items, row num_items + 1 = the [mask]
token used by mask augmentations. Scores are dot products with rows 1..num_items only, so
padding and [mask] are never recommended; column j of a score matrix is item j + 1.

Options every backbone shares (docs/models.md): ``item_dropout`` drops entries of the whole
item-embedding table once per training step (:meth:`SequenceEncoder.begin_step`, called by every
method's loss) and that one dropped table serves the input lookups and the output vectors of the
step, as RecTools does; ``tied_output=False`` scores with a separate output table (same layout, rows
1..num_items used); ``init="xavier_normal"`` initialises every weight matrix Xavier-normal
(RecTools) instead of N(0, init_std).
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

    def __init__(self, num_items: int, hidden_size: int, init_std: float = 0.02,
                 item_dropout: float = 0.0, tied_output: bool = True, init: str = "normal",
                 fast_dropout: bool = True):
        super().__init__()
        self.num_items = num_items
        self.mask_token = num_items + 1
        self.hidden_size = hidden_size
        self.init_std = init_std
        self.init = init
        self.item_emb = nn.Embedding(num_items + 2, hidden_size, padding_idx=0)
        self.out_emb = None if tied_output else nn.Embedding(num_items + 1, hidden_size, padding_idx=0)
        self.item_drop = FastDropout(item_dropout, fast_dropout)
        self._step_tables: dict[str, torch.Tensor] = {}      # this step's dropped tables

    def begin_step(self) -> None:
        """Start a training step: the next read of each item table draws its dropout mask,
        which the rest of the step reuses (input lookups and output vectors alike)."""
        self._step_tables = {}

    def _table(self, name: str) -> torch.Tensor:
        """The weight of table ``name`` ("item_emb" | "out_emb"), with this step's item
        dropout in training (the raw weight when item_dropout is 0 or in eval mode)."""
        weight = getattr(self, name).weight
        if not (self.training and self.item_drop.p > 0):
            return weight
        table = self._step_tables.get(name)
        if table is None:
            table = self._step_tables[name] = self.item_drop(weight)
        return table

    def embed_items(self, items: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.item_drop.p > 0):
            return self.item_emb(items)                          # [B, L, d]
        return nn.functional.embedding(items, self._table("item_emb"), padding_idx=0)

    def output_table(self) -> torch.Tensor:
        """The table whose rows 1..num_items score items (item_emb when tied), with this
        step's item dropout in training: [num_items + 1 or + 2, d]."""
        return self._table("item_emb" if self.out_emb is None else "out_emb")

    def output_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """Output vectors of item ids [...] -> [..., d] (this step's item dropout in training)."""
        return nn.functional.embedding(items, self.output_table())

    def all_states(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """items [B, L] right-padded, lengths [B] -> [B, L, d]: column j is the representation
        of the prefix items[:, :j + 1] (what ``forward(items[:, :j + 1], j + 1)`` gives; columns
        >= lengths are unspecified), in one pass; the all_positions objective needs it."""
        raise NotImplementedError

    def encode_embedded(self, emb: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError                                # -> [B, d]

    def forward(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.encode_embedded(self.embed_items(items), lengths)

    @torch.no_grad()
    def occlusion_states(self, emb: torch.Tensor, lengths: torch.Tensor,
                         internal_batch_size: int = 1024) -> torch.Tensor:
        """[B, L, d] item embeddings -> [B, L, d]: row b, column i is the representation of
        sequence b with position i's item embedding zeroed; columns >= lengths[b] are 0.

        The plain computation (one encoder pass per real (row, position) copy, at most
        ``internal_batch_size`` copies per pass); backbones override it with an exact shortcut.
        Call in eval mode."""
        B, L, _ = emb.shape
        out = emb.new_zeros(B, L, self.hidden_size)
        b_idx, p_idx = (torch.arange(L, device=emb.device) < lengths.view(-1, 1)).nonzero(as_tuple=True)
        for start in range(0, len(b_idx), internal_batch_size):
            b = b_idx[start:start + internal_batch_size]
            p = p_idx[start:start + internal_batch_size]
            copies = emb[b]                                                   # [C, L, d]
            copies[torch.arange(len(b), device=emb.device), p] = 0.0
            out[b, p] = self.encode_embedded(copies, lengths[b])
        return out

    def item_matrix(self) -> torch.Tensor:
        return self.output_table()[1:self.num_items + 1]         # [N, d]

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.item_matrix().T                           # [B, N]

    def init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                if self.init == "xavier_normal":
                    nn.init.xavier_normal_(module.weight.data)
                else:
                    module.weight.data.normal_(0.0, self.init_std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.data.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.data.fill_(1.0)
                module.bias.data.zero_()
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
            if self.out_emb is not None:
                self.out_emb.weight[0].zero_()


def last_real(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[B, L, d] right-padded states -> [B, d] state at position lengths - 1."""
    idx = (lengths - 1).view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
    return hidden.gather(1, idx).squeeze(1)


class FastDropout(nn.Module):
    """Inverted dropout whose masks are windows of a pre-drawn random bank.

    Drawing a fresh Bernoulli mask per call was ~40 % of a SASRec step on our CPU. Instead a
    bank of keep/drop multipliers (one per dropout probability and device, shared by all
    modules) is drawn from torch's RNG at the start of every epoch (:func:`refresh_dropout_banks`)
    and each call multiplies by a window at a random offset. Each element is still dropped with
    probability p; masks of different calls are windows of the same bank (shifted), which is the
    only approximation. Deterministic under the torch seed. ``fast=False`` falls back to
    ``nn.functional.dropout``.

    The output has ``x``'s dtype (under bf16 autocast a bf16 activation is multiplied by a bf16
    copy of the bank, cast once per bank). The window offset is drawn from torch's default CPU
    generator on every device, so a CUDA step does not wait for the GPU to read it back.
    """

    min_bank_size = 1 << 22
    _banks: dict[tuple[float, str], torch.Tensor] = {}
    # how each bank was drawn: (p, device) -> (its generator's state before the draw, size),
    # so that a checkpoint taken mid-epoch can redraw the very banks (bank_origins)
    _origins: dict[tuple[float, str], tuple[torch.Tensor, int]] = {}
    _cast_banks: dict[tuple[float, str, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def __init__(self, p: float, fast: bool = True):
        super().__init__()
        self.p = float(p)
        self.fast = fast

    @classmethod
    def draw_bank(cls, p: float, device: torch.device, size: int | None = None) -> torch.Tensor:
        size = max(size or 0, cls.min_bank_size)
        device = torch.device(device)
        state = (torch.cuda.get_rng_state(device) if device.type == "cuda"
                 else torch.get_rng_state())
        cls._origins[(p, str(device))] = (state, size)
        keep = torch.rand(size, device=device) >= p
        bank = keep.float().mul_(1.0 / (1.0 - p))
        cls._banks[(p, str(device))] = bank
        return bank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if not self.fast:
            return nn.functional.dropout(x, self.p, True)
        n = x.numel()
        bank = self._banks.get((self.p, str(x.device)))
        if bank is None or n > bank.numel():
            bank = self.draw_bank(self.p, x.device, 2 * n)
        if x.dtype != bank.dtype:
            key = (self.p, str(x.device), x.dtype)
            cached = self._cast_banks.get(key)
            if cached is None or cached[0] is not bank:       # the bank was redrawn
                cached = self._cast_banks[key] = (bank, bank.to(x.dtype))
            bank = cached[1]
        # CPU generator, CPU tensor: int() reads host memory, never the device (the same draws
        # as torch.randint without a device, so CPU runs are unchanged).
        offset = int(torch.randint(0, bank.numel() - n + 1, (1,), device="cpu"))
        return x * bank[offset:offset + n].view_as(x)

    def extra_repr(self) -> str:
        return f"p={self.p}, fast={self.fast}"


def bank_origins() -> list[tuple[float, str, torch.Tensor, int]]:
    """How every current dropout bank was drawn: (p, device, generator state, size)."""
    return [(p, device, state, size) for (p, device), (state, size) in FastDropout._origins.items()]


def restore_banks(origins: list[tuple[float, str, torch.Tensor, int]]) -> None:
    """Redraw the banks :func:`bank_origins` described, bit for bit, leaving every generator's
    state as it was (a run resumed mid-epoch continues with the banks it had)."""
    cpu, cuda = torch.get_rng_state(), (torch.cuda.get_rng_state_all()
                                        if torch.cuda.is_available() else None)
    FastDropout._banks.clear()
    FastDropout._cast_banks.clear()
    FastDropout._origins.clear()
    for p, device, state, size in origins:
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            continue                 # resumed on another device: its banks are drawn anew
        if torch.device(device).type == "cuda":
            torch.cuda.set_rng_state(state, torch.device(device))
        else:
            torch.set_rng_state(state)
        FastDropout.draw_bank(p, torch.device(device), size)
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def refresh_dropout_banks(model: nn.Module) -> None:
    """Redraw the banks of every FastDropout probability in ``model`` from the current torch RNG
    state, in a fixed order (call at epoch start so a resumed run draws the same masks as an
    uninterrupted one)."""
    device = next(model.parameters()).device
    probs = sorted({m.p for m in model.modules()
                    if isinstance(m, FastDropout) and m.fast and m.p > 0.0})
    for p in probs:
        FastDropout.draw_bank(p, device)
