"""Encoding rows in length-sorted, trimmed chunks (methods/encoding.py) and where it is used."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ec4srec.config import Config
from ec4srec.methods.base import RecOnly
from ec4srec.methods.encoding import encode_together, length_chunks
from test_fast_paths import BACKBONES, batch, make


def test_length_chunks_hand_computed():
    # Budget 6, at most 4 rows: [1, 1] (2 tokens), then [2] because the first try [2, 3, 5, 5]
    # shrinks to 6 // 5 = 1 row; every later row alone.
    assert length_chunks(np.array([1, 1, 2, 3, 5, 5]), 6, 4) == [2, 1, 1, 1, 1]
    # Equal lengths: budget 4 / length 2 = 2 rows per chunk, the remainder last.
    assert length_chunks(np.array([2, 2, 2, 2, 2]), 4, 10) == [2, 2, 1]
    # max_rows caps a chunk that would fit the budget.
    assert length_chunks(np.array([1] * 7), 100, 3) == [3, 3, 1]
    # A row longer than the budget still gets a chunk of its own.
    assert length_chunks(np.array([9, 9]), 4, 8) == [1, 1]


@pytest.mark.parametrize("budget,max_rows", [(4096, 512), (20, 3), (1, 1)])
def test_length_chunks_cover_every_row_within_budget(budget, max_rows):
    lengths = np.sort(np.random.default_rng(0).integers(1, 51, 300))
    sizes = length_chunks(lengths, budget, max_rows)
    # The chunks partition the rows in order.
    assert sum(sizes) == len(lengths) and min(sizes) >= 1
    bounds = np.cumsum([0] + sizes)
    for a, b in zip(bounds[:-1], bounds[1:]):
        # Each chunk respects max_rows, and the token budget unless it is a lone row.
        assert b - a <= max_rows
        assert b - a == 1 or (b - a) * lengths[b - 1] <= budget


@pytest.mark.parametrize("backbone", BACKBONES)
def test_encode_together_equals_one_padded_pass_per_view(backbone):
    model = make(backbone).eval()
    views = [batch(seed=s, rows=r, width=w) for s, r, w in ((1, 7, 9), (2, 5, 4), (3, 9, 12))]
    with torch.no_grad():
        together = encode_together(model, views, token_budget=16, max_rows=4)
        separate = [model(items, lengths) for items, lengths in views]
    # Pooled, sorted, chunked and trimmed: every row gets the state of a padded pass, in order.
    assert [t.shape for t in together] == [s.shape for s in separate]
    for t, s in zip(together, separate):
        assert torch.allclose(t, s, atol=1e-5)


class WidthSpy(torch.nn.Module):
    """Wraps a backbone and records the padded width of every forward it runs."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.widths = model, []
        self.num_items, self.item_emb = model.num_items, model.item_emb

    def forward(self, items, lengths):
        self.widths.append(items.shape[1])
        return self.inner(items, lengths)

    def item_matrix(self):
        return self.inner.item_matrix()

    def scores(self, h):
        return self.inner.scores(h)


def rec_batch(rows: int = 600, width: int = 12):
    from ec4srec.data.batches import Batch
    items, lengths = batch(seed=5, rows=rows, width=width)
    targets = torch.randint(1, 41, (rows,), generator=torch.Generator().manual_seed(6))
    return Batch(items=items, lengths=lengths, targets=targets, rows=torch.arange(rows))


@pytest.mark.parametrize("backbone", BACKBONES)
def test_sasrec_loss_random_batches_trimmed_same_value(backbone):
    model = make(backbone).eval()
    b = rec_batch()
    losses = {}
    for window in (1, 64):
        config = Config.from_dict({"train": {"bucket_batches": window}})
        with torch.no_grad():
            losses[window] = RecOnly(config, None, model).loss(b, 1)[0]
    # Without dropout, the chunked forward of random batches gives the padded pass's L_rec.
    assert torch.allclose(losses[1], losses[64], atol=1e-5)


def test_sasrec_loss_encodes_random_batches_in_trimmed_chunks():
    spy = WidthSpy(make("sasrec"))
    b = rec_batch()
    RecOnly(Config.from_dict({"train": {"bucket_batches": 1}}), None, spy).loss(b, 1)
    random_widths = list(spy.widths)
    spy.widths.clear()
    RecOnly(Config.from_dict({"train": {"bucket_batches": 64}}), None, spy).loss(b, 1)
    # Bucketed batches keep one forward over the whole padded batch (their run numbers stand).
    assert spy.widths == [12]
    # Random batches: several forwards, each trimmed to its chunk's longest row, the last one
    # holding the batch's longest rows; fewer padded positions than the one padded pass.
    assert len(random_widths) > 1 and max(random_widths) == 12 and min(random_widths) < 12
    assert random_widths == sorted(random_widths)
