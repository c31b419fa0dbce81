"""The next-item objectives and losses (methods/objective.py, data/split.py sequence_rows) and
the base-model options of the backbones (models/*), against direct computations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from ec4srec.config import Config, ConfigError, ModelConfig
from ec4srec.data.batches import make_batch
from ec4srec.data.io import RawSequences
from ec4srec.data.split import leave_one_out, sequence_rows
from ec4srec.methods import build_method
from ec4srec.methods.objective import (RecObjective, full_softmax_loss, sampled_softmax_loss,
                                       seen_logits, target_counts)
from ec4srec.models import build_model

from conftest import random_sequences

NUM_ITEMS, D = 30, 16
BACKBONES = ["sasrec", "gru4rec", "caser"]
SASREC_VARIANTS = [dict(), dict(norm="pre"), dict(norm="pre", positions="from_end"),
                   dict(ffn_activation="relu", init="xavier_normal", tied_output=False)]


def make(backbone: str, dropout: float = 0.0, **options):
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=backbone, hidden_size=D, num_layers=2, num_heads=2, inner_size=32,
                      gru_hidden_size=24, caser_window=3, caser_nv=2, caser_nh=2, dropout=dropout,
                      attn_dropout=dropout, gru_dropout=dropout, caser_dropout=dropout, **options)
    return build_model(cfg, NUM_ITEMS, 12)


def split_of(sequences, max_len):
    return leave_one_out(RawSequences.from_lists(sequences), max_len=max_len)


# --------------------------------------------------------------------------- sequence rows
def test_sequence_rows_hand_built():
    # User 0: items 1..7 (n = 7): training targets at positions 1..4 (items 2..5); validation
    # item 6, test item 7. User 1: items 8, 9, 10 (n = 3): no training target.
    split = split_of([[1, 2, 3, 4, 5, 6, 7], [8, 9, 10]], max_len=3)
    rows = sequence_rows(split.train, max_len=3)
    # One window of 3 targets (3, 4, 5 with inputs 2, 3, 4), then one of 1 target (2, input 1).
    assert rows.length.tolist() == [3, 1]
    batch = make_batch(split.items, rows, np.arange(len(rows)), next_items=True)
    assert batch.items.tolist() == [[2, 3, 4], [1, 0, 0]]
    assert batch.next_items.tolist() == [[3, 4, 5], [2, 0, 0]]
    # The last next item of a row is its target (items[end]).
    assert batch.targets.tolist() == [5, 2]


@pytest.mark.parametrize("max_len", [1, 2, 4, 50])
def test_sequence_rows_cover_prefix_targets_once_and_never_valid_or_test(max_len):
    split = split_of(random_sequences(num_users=40, num_items=NUM_ITEMS, min_len=3, max_len=14,
                                      seed=5), max_len)
    rows = sequence_rows(split.train, max_len)
    batch = make_batch(split.items, rows, np.arange(len(rows)), next_items=True)
    real = batch.next_items > 0
    # Every (user, flat target position) pair of the prefix rows appears exactly once.
    user = np.repeat(rows.user, rows.length)
    pos = np.concatenate([np.arange(e - l + 1, e + 1) for e, l in zip(rows.end, rows.length)])
    got = sorted(zip(user.tolist(), pos.tolist()))
    want = sorted(zip(split.train.user.tolist(), split.train.end.tolist()))
    assert got == want
    # ... and the batch's next items are exactly those targets.
    assert sorted(batch.next_items[real].tolist()) == sorted(split.items[split.train.end].tolist())
    # No validation or test target position is ever a training target.
    assert not set(pos.tolist()) & (set(split.valid.end.tolist()) | set(split.test.end.tolist()))
    # Rows never exceed max_len inputs, and inputs never cross into another user.
    assert rows.length.max() <= max_len and (rows.end - rows.length >= rows.start).all()


# --------------------------------------------------------------------------- all positions
@pytest.mark.parametrize("backbone,options", [(b, {}) for b in BACKBONES]
                         + [("sasrec", o) for o in SASREC_VARIANTS[1:]])
def test_all_states_equal_prefix_forwards(backbone, options):
    model = make(backbone, **options).eval()
    gen = torch.Generator().manual_seed(3)
    items = torch.randint(1, NUM_ITEMS + 1, (5, 7), generator=gen)
    lengths = torch.tensor([7, 7, 7, 7, 7])
    with torch.no_grad():
        states = model.all_states(items, lengths)                               # [5, 7, d]
        for j in range(7):
            prefix = model(items[:, :j + 1], torch.full((5,), j + 1))
            if options.get("positions") == "from_end" and j < 6:
                # from_end positions every column relative to the row's end (as RecTools
                # trains), so only the last column is a prefix forward.
                continue
            # Column j of the one-pass states is the representation of the prefix ending at j.
            assert torch.allclose(states[:, j], prefix, atol=1e-5)


@pytest.mark.parametrize("options", SASREC_VARIANTS)
def test_sasrec_options_keep_fast_paths_exact(options):
    model = make("sasrec", **options).eval()
    gen = torch.Generator().manual_seed(4)
    lengths = torch.tensor([6, 1, 4, 3])
    items = torch.randint(1, NUM_ITEMS + 1, (4, 6), generator=gen)
    items[torch.arange(6)[None] >= lengths[:, None]] = 0
    with torch.no_grad():
        emb = model.embed_items(items)
        h = model.encode_embedded(emb, lengths)
        plain = model.hidden_states(emb, lengths)[torch.arange(4), lengths - 1]
        # The last-position-only block equals the all-positions computation.
        assert torch.allclose(h, plain, atol=1e-5)
        occluded = model.occlusion_states(emb, lengths)
        for i in range(6):
            rows = (lengths > i).nonzero().squeeze(1)
            copy = emb[rows].clone()
            copy[:, i] = 0.0
            # The causal occlusion shortcut equals re-encoding each occluded copy.
            assert torch.allclose(occluded[rows, i], model.encode_embedded(copy, lengths[rows]),
                                  atol=1e-5)


def test_untied_output_scores_with_its_own_table():
    model = make("gru4rec", tied_output=False).eval()
    h = torch.randn(3, D)
    # Scores are dot products with rows 1..N of the output table, not the input table.
    assert torch.allclose(model.scores(h), h @ model.out_emb.weight[1:].T)
    assert not torch.allclose(model.scores(h), h @ model.item_emb.weight[1:NUM_ITEMS + 1].T)


def test_item_dropout_draws_only_when_on():
    items = torch.tensor([[1, 2, 3]])
    model = make("sasrec").train()
    # item_dropout 0 (the default): the lookup is the embedding itself, no random draw.
    state = torch.get_rng_state()
    assert torch.equal(model.embed_items(items), model.item_emb(items))
    assert torch.equal(torch.get_rng_state(), state)
    model = make("sasrec", item_dropout=0.5).train()
    dropped = model.embed_items(items)
    kept = dropped != 0
    # item_dropout p: entries are zeroed or scaled by 1 / (1 - p).
    assert torch.allclose(dropped[kept], 2 * model.item_emb(items)[kept])


# --------------------------------------------------------------------------- losses
def direct_sampled(scores_fn, h, targets, negatives, log_q=None):
    """-log softmax over [target, negatives] written out per target, accidental hits skipped."""
    out = []
    for t in range(len(targets)):
        negs = negatives if negatives.dim() == 1 else negatives[t]
        pos = float(scores_fn(h[t], targets[t]))
        logits = [pos - (0 if log_q is None else float(log_q[targets[t]]))]
        for j in negs.tolist():
            if j != int(targets[t]):
                logits.append(float(scores_fn(h[t], j)) - (0 if log_q is None else float(log_q[j])))
        out.append(-logits[0] + math.log(sum(math.exp(v) for v in logits)))
    return sum(out) / len(out)


@pytest.mark.parametrize("shared", [True, False])
def test_sampled_softmax_equals_direct_computation(shared):
    model = make("gru4rec", tied_output=False).eval()
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(4, D, generator=gen)
    targets = torch.tensor([3, 7, 7, 20])
    negatives = (torch.tensor([7, 1, 2, 20, 7]) if shared
                 else torch.tensor([[3, 1, 2], [7, 7, 9], [1, 2, 3], [4, 20, 5]]))
    log_q = torch.log(torch.linspace(0.5, 2.0, NUM_ITEMS + 1))
    table = model.out_emb.weight.detach()
    for correction in (None, log_q):
        got = sampled_softmax_loss(model, h, targets, negatives, correction)
        want = direct_sampled(lambda x, j: x @ table[j], h, targets, negatives, correction)
        # The vectorised loss equals the per-target definition (hits of the target removed).
        assert float(got.detach()) == pytest.approx(want, abs=1e-5)


def test_uniform_logq_correction_changes_nothing():
    model = make("sasrec").eval()
    h, targets = torch.randn(5, D), torch.tensor([1, 2, 3, 4, 5])
    negatives = torch.randint(1, NUM_ITEMS + 1, (5, 8))
    uniform = torch.full((NUM_ITEMS + 1,), math.log(8 / NUM_ITEMS))
    # Under uniform sampling log(n q) is one constant for every logit: the softmax is unchanged.
    assert torch.allclose(sampled_softmax_loss(model, h, targets, negatives, uniform),
                          sampled_softmax_loss(model, h, targets, negatives, None), atol=1e-6)


def test_full_softmax_loss_on_all_positions_equals_plain_cross_entropy():
    split = split_of(random_sequences(num_users=12, num_items=NUM_ITEMS, seed=2), 5)
    config = Config.from_dict({"train": {"objective": "all_positions"}})
    rows = sequence_rows(split.train, 5)
    model = make("sasrec").eval()
    method = build_method(config, split, model)
    batch = make_batch(split.items, rows, np.arange(len(rows)), next_items=True)
    loss, h_last = method.rec_forward(batch)
    states = model.hidden_states(model.embed_items(batch.items), batch.lengths)
    real = batch.next_items > 0
    want = F.cross_entropy(model.scores(states[real]), batch.next_items[real] - 1)
    # L_rec is the mean cross-entropy over every real position of the batch.
    assert torch.allclose(loss, want, atol=1e-5)
    # The anchor is each row's last position: what the prefix forward gives.
    assert torch.allclose(h_last, model(batch.items, batch.lengths), atol=1e-5)


def test_sampled_objective_draws_negatives_from_the_torch_rng():
    config = Config.from_dict({"train": {"loss": "sampled_softmax", "negatives": 6}})
    objective = RecObjective(config.train, NUM_ITEMS)
    model = make("caser").eval()
    h, targets = torch.randn(3, D), torch.tensor([1, 2, 3])
    torch.manual_seed(7)
    first = objective.loss(model, h, targets)
    torch.manual_seed(7)
    # Same torch seed, same negatives, same loss (and resume restores the torch RNG).
    assert torch.equal(first, objective.loss(model, h, targets))
    # With fewer competitors than the full softmax, the sampled loss is positive and smaller.
    assert 0 < float(first.detach()) < float(full_softmax_loss(model, h, targets).detach())


def test_popularity_counts_are_training_targets_of_either_objective():
    split = split_of([[1, 2, 3, 4, 5, 6], [2, 3, 4, 7, 8]], max_len=10)
    rows = sequence_rows(split.train, 10)
    prefix = target_counts(split.items, split.train, 8, "prefix_rows")
    seq = target_counts(split.items, rows, 8, "all_positions")
    # Training targets: user 0 items 2, 3, 4; user 1 items 3, 4 (+1 smoothing for every item).
    assert prefix.tolist() == [1, 2, 3, 3, 1, 1, 1, 1]
    # Both objectives count the same targets.
    assert seq.tolist() == prefix.tolist()


@pytest.mark.parametrize("key,value", [("train.objective", "windows"), ("train.loss", "bpr"),
                                       ("train.negatives", 0), ("train.adam_beta2", 1.0),
                                       ("train.select_protocol", "seen"), ("model.norm", "mid"),
                                       ("model.positions", "middle"), ("model.item_dropout", 1.0),
                                       ("method.explain_target", "label")])
def test_new_keys_reject_bad_values(key, value):
    # Every new key is validated and the error names it.
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        Config().with_overrides([f"{key}={value}"])


def test_seen_negatives_hand_built():
    # One row: inputs 4, 5, 6 (next items 5, 6, 7): position 0 has seen {4}, position 1 {4, 5},
    # position 2 {4, 5, 6}; the item equal to a position's target is never its negative.
    model = make("sasrec").eval()
    items = torch.tensor([[4, 5, 6, 0]])
    next_items = torch.tensor([[5, 6, 7, 0]])
    states = torch.randn(1, 4, D)
    got = seen_logits(model, states, items, next_items)[0]                      # [4, 4]
    finite = torch.isfinite(got)
    # Position j sees exactly the inputs 0..j (never the future, never padding).
    assert finite.tolist() == [[True, False, False, False], [True, True, False, False],
                               [True, True, True, False], [True, True, True, False]]
    table = model.item_emb.weight
    # A seen item's logit is the state's dot product with its output vector.
    assert torch.allclose(got[2, 1], states[0, 2] @ table[5])


def test_seen_negatives_prefix_rows_equal_extra_negative_ids():
    split = split_of(random_sequences(num_users=10, num_items=NUM_ITEMS, seed=4), 6)
    config = Config.from_dict({"train": {"loss": "sampled_softmax", "negatives": 4,
                                         "seen_negatives": True}})
    method = build_method(config, split, make("caser").eval())
    batch = make_batch(split.items, split.train, np.arange(12))
    torch.manual_seed(1)
    loss, h = method.rec_forward(batch)
    torch.manual_seed(1)
    negatives = torch.randint(1, NUM_ITEMS + 1, (4,))
    table = method.model.item_emb.weight.detach()
    per_row = torch.cat([negatives.expand(12, 4), batch.items], 1)              # [12, 4 + L]
    want = direct_sampled(lambda x, j: x @ table[j], h.detach(), batch.targets,
                          torch.where(per_row == 0, batch.targets.view(-1, 1), per_row))
    # Seen negatives = the history items appended to each row's sampled negatives (padding and
    # the target itself skipped), as a per-target computation gives.
    assert float(loss.detach()) == pytest.approx(want, abs=1e-5)
