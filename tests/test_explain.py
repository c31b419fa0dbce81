"""Explainers (Section 4.2, Eq. 5), compute_importance, topk_hits and the explain CSV."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from captum.attr import Occlusion

from ec4srec.cli import CLIError
from ec4srec.data.split import Examples
from ec4srec.explain import (compute_importance, explain_batch, normalise, raw_attributions,
                             topk_hits)
from ec4srec.models import Caser, GRU4Rec, SASRec

N_ITEMS, D, MAX_LEN = 30, 16, 12
GRADIENT_OR_OCCLUSION = ("saliency", "integrated_gradients", "occlusion")
CASES = [(b, e) for b in ("sasrec", "gru4rec", "caser") for e in GRADIENT_OR_OCCLUSION] + \
        [("sasrec", "attention")]


def make_model(backbone: str, seed: int = 0):
    torch.manual_seed(seed)
    if backbone == "sasrec":
        return SASRec(N_ITEMS, MAX_LEN, D, num_layers=2, num_heads=2, inner_size=32, init_std=0.3)
    if backbone == "gru4rec":
        return GRU4Rec(N_ITEMS, D, gru_hidden_size=16, init_std=0.3)
    return Caser(N_ITEMS, D, window=3, nv=2, nh=4, init_std=0.3)


def make_batch(seed: int = 1, lengths=(7, 3, 5, 1, 6)):
    """items [B, 7] right-padded with distinct items per row, lengths [B]."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    width = int(lengths.max())
    items = torch.stack([torch.randperm(N_ITEMS, generator=gen)[:width] + 1 for _ in lengths])
    items[torch.arange(width).view(1, -1) >= lengths.view(-1, 1)] = 0
    return items, lengths


def explain(model, items, lengths, explainer, targets=None):
    return explain_batch(model, items, lengths, explainer, targets, ig_steps=8,
                         internal_batch_size=16)


@pytest.mark.parametrize("backbone,explainer", CASES)
def test_scores_contract(backbone, explainer):
    model = make_model(backbone)
    items, lengths = make_batch()
    scores = explain(model, items, lengths, explainer)
    pad = torch.arange(items.shape[1]).view(1, -1) >= lengths.view(-1, 1)
    # one float32 score per position of the batch
    assert scores.shape == items.shape and scores.dtype == torch.float32
    # padding positions are exactly zero
    assert torch.all(scores[pad] == 0)
    # scores are nonnegative
    assert torch.all(scores >= 0)
    # each row sums to 1 over its real positions (Eq. 5)
    torch.testing.assert_close(scores.sum(1), torch.ones(len(lengths)))
    # explaining is deterministic
    assert torch.equal(scores, explain(model, items, lengths, explainer))


@pytest.mark.parametrize("backbone,explainer", CASES)
def test_padding_invariance(backbone, explainer):
    model = make_model(backbone)
    items, lengths = make_batch()
    wide = torch.cat([items, torch.zeros(len(items), 4, dtype=items.dtype)], 1)   # [B, 11]
    narrow = explain(model, items, lengths, explainer)
    wider = explain(model, wide, lengths, explainer)
    # extra padding columns change nothing on real positions and stay zero themselves
    torch.testing.assert_close(wider[:, :items.shape[1]], narrow, atol=1e-5, rtol=1e-4)
    assert torch.all(wider[:, items.shape[1]:] == 0)


def _selected(model, emb, lengths, cols):
    return model.scores(model.encode_embedded(emb, lengths)).gather(1, cols.view(-1, 1)).squeeze(1)


def test_occlusion_equals_captum_on_real_positions():
    model = make_model("sasrec").eval()
    items, lengths = make_batch()
    ours = raw_attributions(model, items, lengths, "occlusion", internal_batch_size=7)
    with torch.no_grad():
        emb = model.embed_items(items)                                        # [B, L, d]
        cols = model.scores(model(items, lengths)).argmax(1)
    ref = Occlusion(lambda e, n, c: _selected(model, e, n, c)).attribute(
        emb, sliding_window_shapes=(1, D), baselines=0, additional_forward_args=(lengths, cols))
    ref = ref.abs().sum(-1) / D                      # captum gives each of the d dims the diff
    real = torch.arange(items.shape[1]).view(1, -1) < lengths.view(-1, 1)
    # identical attributions on real positions (abs values, before normalisation)
    torch.testing.assert_close(ours[real], ref[real], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec", "caser"])
def test_saliency_equals_autograd_eq5(backbone):
    model = make_model(backbone).eval()
    items, lengths = make_batch()
    emb = model.embed_items(items).detach().requires_grad_()
    logits = model.scores(model.encode_embedded(emb, lengths))               # [B, N]
    y = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
    (grad,) = torch.autograd.grad(y, emb)                                     # [B, L, d]
    raw = grad.abs().sum(-1)
    raw[torch.arange(items.shape[1]).view(1, -1) >= lengths.view(-1, 1)] = 0
    expected = raw / raw.sum(1, keepdim=True)
    # Saliency through captum is exactly Eq. 5 with |dy/de_ij|
    torch.testing.assert_close(explain(model, items, lengths, "saliency"), expected)


@pytest.mark.parametrize("backbone", ["gru4rec", "caser"])
def test_attention_needs_attention_backbone(backbone):
    items, lengths = make_batch()
    # backbones without attention refuse the attention explainer by name
    with pytest.raises(ValueError, match=f"needs a backbone with attention.*{backbone} has none"):
        explain(make_model(backbone), items, lengths, "attention")


def test_attention_is_last_layer_head_mean_at_last_query():
    model = make_model("sasrec").eval()
    items, lengths = make_batch()
    with torch.no_grad():
        x = model.ffn[0](model.attn[0](model._input(model.embed_items(items)))[0]) \
            if len(model.attn) > 1 else model._input(model.embed_items(items))
        _, full = model.attn[-1](x, need_weights=True)                       # all queries
    last = full.mean(1)                                                       # [B, L, L]
    expected = torch.stack([last[b, lengths[b] - 1] for b in range(len(lengths))])
    # the attention explainer reads row lengths-1 of the last layer's head-mean weights
    torch.testing.assert_close(explain(model, items, lengths, "attention"), expected)


@pytest.mark.parametrize("explainer", GRADIENT_OR_OCCLUSION)
def test_explicit_target_differs_from_predicted(explainer):
    model = make_model("sasrec").eval()
    items, lengths = make_batch()
    with torch.no_grad():
        logits = model.scores(model(items, lengths))
    worst = logits.argmin(1) + 1                                              # never the argmax
    predicted = explain(model, items, lengths, explainer)
    # explaining another item than the argmax gives other scores
    assert not torch.allclose(explain(model, items, lengths, explainer, worst), predicted,
                              atol=1e-4)
    # explaining the argmax explicitly is the same as the default
    torch.testing.assert_close(explain(model, items, lengths, explainer, logits.argmax(1) + 1),
                               predicted)


@pytest.mark.parametrize("explainer", GRADIENT_OR_OCCLUSION)
def test_caser_ignores_positions_outside_window(explainer):
    model = make_model("caser")                                               # window 3
    items, lengths = make_batch(lengths=(7, 5, 3))
    raw = raw_attributions(model, items, lengths, explainer, ig_steps=8, internal_batch_size=16)
    for b, n in enumerate(lengths.tolist()):
        # positions older than the last `window` items never reach Caser's output
        assert torch.all(raw[b, :n - 3].abs() <= 1e-6 * raw[b].max())
        # the window itself carries attribution
        assert torch.all(raw[b, n - 3:n] > 0)
    # normalisation keeps them (near) zero and still sums to 1
    torch.testing.assert_close(normalise(raw, lengths).sum(1), torch.ones(3))


def test_normalise_uniform_when_total_is_zero():
    raw = torch.tensor([[0.0, 0.0, 0.0, 5.0], [1.0, 3.0, 0.0, 0.0]])
    # an all-zero row becomes uniform over its real positions; padding stays 0
    torch.testing.assert_close(normalise(raw, torch.tensor([3, 2])),
                               torch.tensor([[1 / 3, 1 / 3, 1 / 3, 0.0], [0.25, 0.75, 0.0, 0.0]]))


def _tiny_examples():
    """Flat items of 3 users and 6 examples of mixed lengths (target = items[end])."""
    items = np.array([3, 7, 1, 9, 4, 12, 5, 8, 2, 11, 6, 10, 13, 14], dtype=np.int64)
    end = np.array([4, 2, 9, 12, 6, 13], dtype=np.int64)
    length = np.array([4, 2, 3, 5, 1, 2], dtype=np.int64)
    return items, Examples(end=end, length=length, user=np.zeros(6, dtype=np.int64))


@pytest.mark.parametrize("explainer", ["occlusion", "attention"])
def test_compute_importance_aligned_with_examples(explainer):
    model = make_model("sasrec")
    items, ex = _tiny_examples()
    out = compute_importance(model, items, ex, explainer, max_len=MAX_LEN, batch_size=2)
    # one row per example, max_len columns
    assert out.shape == (len(ex), MAX_LEN) and out.dtype == np.float32
    for i in range(len(ex)):
        n = int(ex.length[i])
        hist = torch.from_numpy(items[ex.end[i] - n:ex.end[i]]).view(1, -1)
        alone = explain_batch(model, hist, torch.tensor([n]), explainer)[0].numpy()
        # row i holds example i's scores, computed as if alone
        np.testing.assert_allclose(out[i, :n], alone, atol=1e-5, rtol=1e-4)
        # columns past the example's length are 0
        assert np.all(out[i, n:] == 0)


def test_compute_importance_target_mode():
    model = make_model("sasrec")
    items, ex = _tiny_examples()
    with torch.no_grad():
        hist = torch.from_numpy(items[ex.end[3] - 5:ex.end[3]]).view(1, -1)
        predicted_item = int(model.scores(model(hist, torch.tensor([5]))).argmax()) + 1
    assert predicted_item != items[ex.end[3]]          # the case under test: target != argmax
    pred = compute_importance(model, items, ex, "saliency", "predicted", MAX_LEN)
    targ = compute_importance(model, items, ex, "saliency", "target", MAX_LEN)
    expected = explain_batch(model, hist, torch.tensor([5]), "saliency",
                             torch.tensor([items[ex.end[3]]]))[0].numpy()
    # 'target' explains the ground-truth item items[end] ...
    np.testing.assert_allclose(targ[3, :5], expected, atol=1e-6)
    # ... which differs from explaining the predicted item
    assert not np.allclose(targ[3], pred[3], atol=1e-4)


def test_topk_hits_hand_example():
    scores = np.array([[0.1, 0.5, 0.2, 0.15, 0.05],     # top-3 {1, 2, 3}
                       [0.4, 0.3, 0.2, 0.1, 0.0]])      # top-3 {0, 1, 2}
    important = np.array([[1, 2, 4], [0, 1, 2]])
    # (2/3 + 3/3) / 2
    assert topk_hits(scores, important, k=3) == pytest.approx(5 / 6)
    # torch input gives the same
    assert topk_hits(torch.from_numpy(scores), important) == pytest.approx(5 / 6)


@pytest.mark.parametrize("explainer", GRADIENT_OR_OCCLUSION)
def test_model_mode_and_grads_untouched(explainer):
    model = make_model("gru4rec").train()
    items, lengths = make_batch()
    explain(model, items, lengths, explainer)
    # the caller's training mode is restored
    assert model.training
    # no parameter received a gradient
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    explain(model, items, lengths, explainer)
    # eval mode stays eval mode
    assert not model.training


def _tiny_trainer(tmp_path, backbone="sasrec"):
    from ec4srec.config import Config
    from ec4srec.data import load_dataset
    from ec4srec.trainer import Trainer

    rng = np.random.default_rng(0)
    lines = [f"{100 + u} " + " ".join(map(str, rng.permutation(20)[:n] + 1))
             for u, n in enumerate([4, 9, 6, 3, 12])]
    lines.append("999 5 6")                                           # too short: skipped
    path = tmp_path / "tiny.txt"
    path.write_text("\n".join(lines) + "\n")
    config = Config()
    config.data.dataset, config.data.max_len = str(path), 8
    config.model.backbone, config.model.hidden_size = backbone, 16
    config.model.num_layers, config.model.inner_size = 1, 32
    config.train.device = "cpu"
    config.method.ig_steps, config.method.explain_batch_size = 4, 3
    config.validate()
    return Trainer(config, load_dataset(config.data), log=lambda m: None)


def test_write_explanations_csv(tmp_path):
    from ec4srec.explain_cli import write_explanations

    trainer = _tiny_trainer(tmp_path)
    out = tmp_path / "expl.csv"
    count = write_explanations(trainer, [104, 100], "occlusion", out)
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    # header and one row per position of each truncated history (12 -> 8, then 4)
    assert list(rows[0]) == ["user", "position", "item", "score"] and count == len(rows) == 12
    raw = trainer.dataset.raw
    u4 = raw.items[raw.offsets[4]:raw.offsets[5]]
    # user 104's rows are its last 8 items, oldest first, positions 0..7
    assert [int(r["item"]) for r in rows[:8]] == u4[-8:].tolist()
    assert [int(r["position"]) for r in rows[:8]] == list(range(8))
    for user in ("104", "100"):
        # each user's scores sum to 1
        assert sum(float(r["score"]) for r in rows if r["user"] == user) == pytest.approx(1, abs=1e-6)
    # default explainer (method.explainer) over all users: every usable user's items
    assert write_explanations(trainer, None, None, out) == 4 + 8 + 6 + 3 + 8


def test_write_explanations_errors(tmp_path):
    from ec4srec.explain_cli import write_explanations

    trainer = _tiny_trainer(tmp_path)
    out = tmp_path / "expl.csv"
    # an unknown (or skipped) user id is a CLI error naming it, and nothing is written
    with pytest.raises(CLIError, match="999"):
        write_explanations(trainer, [100, 999], "saliency", out)
    assert not out.exists()
    gru = _tiny_trainer(tmp_path, "gru4rec")
    # attention on a backbone without attention is a CLI error
    with pytest.raises(CLIError, match="gru4rec has none"):
        write_explanations(gru, None, "attention", out)
