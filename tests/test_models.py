from __future__ import annotations

import pytest
import torch

from ec4srec.config import ModelConfig
from ec4srec.models import FastDropout, build_model, refresh_dropout_banks

NUM_ITEMS, MAX_LEN, D = 20, 10, 16
BACKBONES = ["sasrec", "gru4rec", "caser"]


def make(backbone: str, **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=backbone, hidden_size=D, num_layers=1, num_heads=2, inner_size=32,
                      gru_hidden_size=16, caser_window=3, caser_nv=2, caser_nh=2, **kw)
    return build_model(cfg, NUM_ITEMS, MAX_LEN)


def batch(width: int = 6):
    """4 right-padded histories of lengths 6, 1, 3, 2 (ids 1..NUM_ITEMS)."""
    lengths = torch.tensor([6, 1, 3, 2])
    gen = torch.Generator().manual_seed(1)
    items = torch.randint(1, NUM_ITEMS + 1, (4, width), generator=gen)
    items[torch.arange(width)[None, :] >= lengths[:, None]] = 0
    return items, lengths


@pytest.mark.parametrize("backbone", BACKBONES)
def test_output_shape_and_finite(backbone):
    model = make(backbone)
    items, lengths = batch()
    for training in (True, False):
        model.train(training)
        h = model(items, lengths)
        # Every backbone maps [B, L] ids to finite [B, d] representations.
        assert h.shape == (4, D) and torch.isfinite(h).all()
    scores = model.scores(h)
    # Scores cover items 1..N only (no padding, no [mask] column).
    assert scores.shape == (4, NUM_ITEMS)
    # Column j is the dot product with item j + 1's embedding.
    assert torch.allclose(scores[:, 0], h @ model.item_emb.weight[1])


@pytest.mark.parametrize("backbone", BACKBONES)
def test_right_padding_does_not_change_representation(backbone):
    model = make(backbone).eval()
    items, lengths = batch(width=6)
    wide = torch.cat([items, torch.zeros(4, MAX_LEN - 6, dtype=items.dtype)], dim=1)
    with torch.no_grad():
        narrow_h, wide_h = model(items, lengths), model(wide, lengths)
        # Each row alone (trimmed to its own length) gives the same representation too.
        single = torch.cat([model(items[i:i + 1, :int(n)], lengths[i:i + 1])
                            for i, n in enumerate(lengths)])
    # Extra right padding changes nothing in eval mode.
    assert torch.allclose(narrow_h, wide_h, atol=1e-5)
    assert torch.allclose(narrow_h, single, atol=1e-5)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_content_after_length_is_ignored(backbone):
    model = make(backbone).eval()
    items, lengths = batch()
    garbage = items.clone()
    pad = garbage == 0
    garbage[pad] = 5
    with torch.no_grad():
        # Positions past each length never influence the representation.
        assert torch.allclose(model(items, lengths), model(garbage, lengths), atol=1e-5)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_encode_embedded_equals_forward(backbone):
    model = make(backbone).eval()
    items, lengths = batch()
    emb = model.embed_items(items)
    # Explainers go through encode_embedded(embed_items(x)); it must equal forward(x).
    assert torch.allclose(model.encode_embedded(emb, lengths), model(items, lengths), atol=1e-6)
    # The padding row is zero, so padding contributes nothing to the embeddings.
    assert (model.item_emb.weight[0] == 0).all()


@pytest.mark.parametrize("backbone", BACKBONES)
def test_gradients_flow_to_item_embeddings(backbone):
    model = make(backbone).train()
    items, lengths = batch()
    emb = model.embed_items(items).detach().requires_grad_(True)
    h = model.encode_embedded(emb, lengths)
    # (A random projection: a plain sum of a LayerNorm output is constant.)
    (h * torch.randn(h.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
    # Saliency-style explainers need a gradient w.r.t. real item embeddings.
    assert emb.grad is not None and emb.grad[0].abs().sum() > 0


def test_sasrec_attention_is_causal_and_normalised():
    model = make("sasrec").eval()
    items, lengths = batch()
    with torch.no_grad():
        h, attentions = model.encode_embedded(model.embed_items(items), lengths, return_attention=True)
        plain = model(items, lengths)
    # The last (here: only) block reports the last real query's row: [B, H, 1, L].
    assert len(attentions) == 1 and attentions[0].shape == (4, 2, 1, 6)
    w = attentions[0].squeeze(2)
    # Rows are distributions.
    assert torch.allclose(w.sum(-1), torch.ones(4, 2), atol=1e-5)
    # The last real query never attends past the sequence's end.
    assert (w[torch.arange(6)[None, None, :].expand(4, 2, 6) >= lengths.view(-1, 1, 1)] == 0).all()
    # The explicit-attention path gives the same representation as the fused one.
    assert torch.allclose(h, plain, atol=1e-5)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("p", [0.2, 0.5])
def test_fast_dropout_statistics(fast, p):
    torch.manual_seed(0)
    drop = FastDropout(p, fast=fast).train()
    x = torch.ones(200_000)
    y = drop(x)
    # About p of the entries are zeroed.
    assert abs((y == 0).float().mean().item() - p) < 0.01
    # Survivors are scaled by 1/(1-p), so E[y] = E[x].
    assert abs(y.mean().item() - 1.0) < 0.02
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))
    # Two calls draw different masks.
    assert not torch.equal(drop(x), y)


def test_fast_dropout_eval_identity_and_p_zero():
    x = torch.randn(3, 5)
    # In eval mode dropout is the identity.
    assert torch.equal(FastDropout(0.5).eval()(x), x)
    # p = 0 is the identity in training too.
    assert torch.equal(FastDropout(0.0).train()(x), x)


def test_fast_dropout_deterministic_under_seed():
    model = make("sasrec").train()
    items, lengths = batch()
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        refresh_dropout_banks(model)
        outs.append(model(items, lengths))
    # Re-seeding and refreshing the banks reproduces the same dropout masks.
    assert torch.equal(outs[0], outs[1])


def test_fast_dropout_input_larger_than_bank(monkeypatch):
    monkeypatch.setattr(FastDropout, "min_bank_size", 16)
    monkeypatch.setattr(FastDropout, "_banks", {})
    drop = FastDropout(0.5).train()
    FastDropout.draw_bank(0.5, torch.device("cpu"))
    y = drop(torch.ones(100))
    # An input larger than the bank grows the bank instead of failing ...
    assert y.shape == (100,) and FastDropout._banks[(0.5, "cpu")].numel() >= 100
    # ... and the result is still inverted dropout: every entry is 0 or 1 / (1 - p).
    assert set(y.unique().tolist()) <= {0.0, 2.0}


def test_fast_dropout_banks_shared_per_probability():
    model = make("sasrec").train()
    refresh_dropout_banks(model)
    probs = {m.p for m in model.modules() if isinstance(m, FastDropout) and m.p > 0}
    # One bank per dropout probability, shared by all modules that use it.
    assert {p for p, _ in FastDropout._banks if p in probs} == probs
