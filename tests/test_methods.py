"""Methods: the update schedule (Sec. 4.1), k (Sec. 4.3), same-target retrieval (rtrl, ertrl+),
which loss terms each method combines before/after the first importance update (Eqs. 1-9),
training of every method x backbone, and the importance state across checkpoints."""
from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ec4srec.checkpoint import load_torch
from ec4srec.config import ConfigError
from ec4srec.data.batches import make_batch
from ec4srec.data.io import RawSequences
from ec4srec.data.split import leave_one_out
from ec4srec.methods import augment
from ec4srec.methods.contrastive import Contrastive
from ec4srec.methods.losses import pair_nce
from ec4srec.methods.retrieval import SameTargetIndex
from ec4srec.schedule import update_epochs
from ec4srec.trainer import CHECKPOINT, Trainer

from conftest import tiny_config

METHODS = ("sasrec", "cl4srec", "duorec", "ec4srec_ssl", "ec4srec_sl", "ec4srec")
GUIDED = ("ec4srec_ssl", "ec4srec_sl", "ec4srec")
BACKBONES = ("sasrec", "gru4rec", "caser")


def quiet(config, dataset, out=None, **kw):
    return Trainer(config, dataset, output_dir=out, log=lambda m: None, **kw)


# =========================================================================== schedule
@pytest.mark.parametrize("epochs, updates, expected", [
    (100, 3, [25, 50, 75]),                 # the paper's example (Section 4.1)
    (150, 1, [75]),
    (150, 5, [25, 50, 75, 100, 125]),
    (2, 1, [1]),
    (7, 2, [2, 4]),                         # floor(7 / 3) = 2
])
def test_update_epochs_formula(epochs, updates, expected):
    got = update_epochs(epochs, updates)
    # Updates are at l * floor(N / (p + 1)) for l = 1..p.
    assert got == expected
    # ... computed independently from the formula as well.
    assert got == [l * (epochs // (updates + 1)) for l in range(1, updates + 1)]


def test_update_epochs_explicit():
    # Explicit epochs override the formula (upstream's [15, 30]).
    assert update_epochs(200, 5, [15, 30]) == [15, 30]
    # They are sorted, de-duplicated and restricted to the budget.
    assert update_epochs(40, 1, [30, 15, 30, 99]) == [15, 30]
    # None of them within the budget is an error.
    with pytest.raises(ValueError):
        update_epochs(10, 1, [11, 20])


@pytest.mark.parametrize("epochs, updates", [(3, 3), (1, 1), (4, 5)])
def test_update_epochs_budget_too_small(epochs, updates):
    # Fewer than p + 1 epochs cannot host p updates at distinct epochs >= 1.
    with pytest.raises(ValueError):
        update_epochs(epochs, updates)


def test_config_rejects_schedule_that_does_not_fit(tiny_file):
    # The guided methods validate their schedule when the config is built.
    with pytest.raises(ConfigError):
        tiny_config(tiny_file, method__name="ec4srec", train__epochs=3, method__updates=5)
    # Plain methods do not have a schedule, so the same budget is fine.
    tiny_config(tiny_file, method__name="duorec", train__epochs=3, method__updates=5)


# =========================================================================== k
def split_of(sequences, max_len=10):
    return leave_one_out(RawSequences.from_lists(sequences), max_len)


@pytest.fixture(scope="module")
def small_split():
    return split_of([[1, 2, 3, 4, 5], [2, 3, 4, 5, 6]])


@pytest.mark.parametrize("mu_e", [0.1, 0.3, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("counts", ["unimportant", "important"])
@pytest.mark.parametrize("rounding", ["floor", "ceil"])
def test_num_lowest(small_split, mu_e, counts, rounding):
    config = tiny_config(method__name="ec4srec", method__updates=1, method__mu_e=mu_e,
                         method__k_counts=counts, method__k_rounding=rounding)
    method = Contrastive(config, small_split, model=None)
    lengths = torch.arange(1, 51)
    got = method.num_lowest(lengths).tolist()
    share = [Fraction(str(mu_e)) * n for n in range(1, 51)]          # exact mu_e * |s|
    m = [math.ceil(s) if rounding == "ceil" else math.floor(s) for s in share]
    want = [n - mi for n, mi in zip(range(1, 51), m)] if counts == "important" else m
    # k = floor(mu_e |s|) (paper), |s| - floor(mu_e |s|) for k_counts=important; ceil when asked.
    assert got == want


# =========================================================================== retrieval
# Users (oldest item first). Training rows have targets at 0-based positions 1..n-3.
# Target 9 is shared by five training rows (users 0, 1, 2, 3, 6); user 4's VALIDATION target
# and user 5's TEST target are also 9 and must never be retrieved.
USERS = [
    [1, 2, 9, 5, 6, 7],
    [3, 4, 9, 8, 6, 7],
    [1, 3, 9, 10, 11, 12],
    [5, 9, 2, 4, 11, 13],
    [14, 15, 16, 17, 9, 18],
    [19, 20, 21, 22, 23, 9],
    [2, 3, 1, 9, 24, 25, 26],
    [27, 28, 29, 30, 31],
    [32, 29, 28, 34, 35],          # keeps the largest training target (29) in a group of two
]


@pytest.fixture(scope="module")
def hand():
    split = split_of(USERS)
    index = SameTargetIndex(split.items, split.train)
    train = split.train
    # Python-side views of every training row, from USERS and the row's user/length only.
    hist = [USERS[u][:n] for u, n in zip(train.user.tolist(), train.length.tolist())]
    target = [USERS[u][n] for u, n in zip(train.user.tolist(), train.length.tolist())]
    return split, index, hist, target


def row_of(hand, user: int, length: int) -> int:
    split = hand[0]
    (r,) = np.nonzero((split.train.user == user) & (split.train.length == length))[0]
    return int(r)


def test_hand_dataset_layout(hand):
    split, index, hist, target = hand
    # The leave-one-out rows are the prefixes of each user's first n - 2 items.
    assert len(hist) == sum(len(s) - 3 for s in USERS)
    assert target.count(9) == 5 and hist[row_of(hand, 2, 2)] == [1, 3]
    # The validation/test examples with target 9 exist (so the "never retrieved" test can fail).
    assert split.items[split.valid.end[4]] == 9 and split.items[split.test.end[5]] == 9


def test_histories_are_the_training_prefixes(hand):
    split, index, hist, target = hand
    rows = torch.arange(len(hist))
    seq, length = index.histories(rows)
    # histories() returns each row's items, right-padded with 0, and its length.
    for r in range(len(hist)):
        n = len(hist[r])
        assert int(length[r]) == n and seq[r, :n].tolist() == hist[r] and not seq[r, n:].any()
    # It keeps the shape of the row tensor ([2, 3] rows -> [2, 3, L]).
    grid = torch.tensor([[0, 1, 2], [3, 4, 5]])
    seq2, len2 = index.histories(grid)
    assert seq2.shape[:2] == (2, 3) and len2.shape == (2, 3)
    assert seq2[1, 2, :len(hist[5])].tolist() == hist[5]


def test_random_partner_same_target_other_row_uniform(hand):
    split, index, hist, target = hand
    R = len(hist)
    draws = 2000
    rows = torch.arange(R).repeat(draws)
    g = torch.Generator().manual_seed(0)
    partners = index.random_partner(rows, generator=g)
    for r in range(R):
        got = partners[rows == r].tolist()
        group = [k for k in range(R) if target[k] == target[r] and k != r]
        if not group:
            # A row alone with its target is its own partner.
            assert set(got) == {r}
            continue
        counts = Counter(got)
        # Always a DIFFERENT training row with the SAME target.
        assert set(counts) <= set(group)
        # Every candidate is drawn, about uniformly (each within 20 % of draws / |group|).
        expected = draws / len(group)
        assert set(counts) == set(group)
        assert all(abs(c - expected) < 0.2 * expected for c in counts.values()), counts
    # Partners are training rows (indices into split.train), never validation/test examples.
    assert int(partners.min()) >= 0 and int(partners.max()) < R
    ends = set(index.end[partners].tolist())
    assert ends <= set(split.train.end.tolist())
    assert not ends & (set(split.valid.end.tolist()) | set(split.test.end.tolist()))


@pytest.mark.parametrize("kind", ["random", "guided"])
def test_singleton_with_largest_target_is_its_own_partner(kind):
    # Training targets 2, 3, 2, 6: the row with target 6 (the largest) has no same-target partner.
    split = split_of([[1, 2, 3, 4, 5], [1, 2, 6, 7, 8]])
    index = SameTargetIndex(split.items, split.train)
    rows = torch.arange(len(split.train))
    if kind == "random":
        got = index.random_partner(rows)
    else:
        seq, length = index.histories(rows)
        got = index.guided_partner(rows, seq, length, torch.where(seq > 0, 1.0, 0.0), split.num_items)
    # Rows 0 and 2 (target 2) swap; rows 1 and 3 are alone with their target: they are their own.
    assert got.tolist() == [2, 1, 0, 3]


def util_ref(anchor: list[int], scores: list[float], cand: list[int]) -> float:
    """The paper's ertrl+ utility: |s_u ∩ s_k| / |s_u ∪ s_k| * sum_{v in s_u ∩ s_k} score_u(v)."""
    a, c = set(anchor), set(cand)
    shared = a & c
    score = {v: s for v, s in zip(anchor, scores)}
    return len(shared) / len(a | c) * sum(score[v] for v in shared)


def guided_draws(hand, row, scores, draws=20000, pad_to=None, max_candidates=64, seed=0):
    split, index, hist, target = hand
    items = list(hist[row])
    sc = list(scores)
    width = pad_to or len(items)
    items += [0] * (width - len(items))
    sc += [7.5] * (width - len(sc))                       # garbage at padding must be ignored
    rows = torch.full((draws,), row)
    anchor = torch.tensor([items]).repeat(draws, 1)
    lengths = torch.full((draws,), len(hist[row]))
    anchor_scores = torch.tensor([sc]).repeat(draws, 1)
    g = torch.Generator().manual_seed(seed)
    return index.guided_partner(rows, anchor, lengths, anchor_scores, split.num_items,
                                max_candidates=max_candidates, generator=g)


@pytest.mark.parametrize("user, length, scores", [
    (2, 2, [0.7, 0.3]),            # anchor [1, 3]
    (6, 3, [0.2, 0.5, 0.3]),       # anchor [2, 3, 1]
    (0, 2, [0.9, 0.1]),            # anchor [1, 2]
])
def test_guided_partner_follows_util(hand, user, length, scores):
    split, index, hist, target = hand
    row = row_of(hand, user, length)
    draws = 20000
    partners = guided_draws(hand, row, scores, draws, pad_to=len(scores) + 2)
    group = [k for k in range(len(hist)) if target[k] == target[row] and k != row]
    util = {k: util_ref(hist[row], scores, hist[k]) for k in group}
    total = sum(util.values())
    counts = Counter(partners.tolist())
    # Only same-target training rows other than the anchor are returned.
    assert set(counts) <= set(group)
    # A candidate with util 0 (no shared item) is never chosen while another has util > 0.
    zero = [k for k in group if util[k] == 0]
    assert zero and all(counts[k] == 0 for k in zero)
    # Frequencies match util / sum util (binomial sd < 0.004 at 20000 draws).
    for k in group:
        assert counts[k] / draws == pytest.approx(util[k] / total, abs=0.015), (k, counts, util)


def test_guided_partner_hand_computed_probabilities(hand):
    """Anchor [1, 3] with scores (0.7, 0.3) against the target-9 group, by hand:
    [1, 2]: 1/3 * 0.7;  [3, 4]: 1/3 * 0.3;  [5]: 0;  [2, 3, 1]: 2/3 * (0.7 + 0.3)."""
    split, index, hist, target = hand
    row = row_of(hand, 2, 2)
    partners = guided_draws(hand, row, [0.7, 0.3])
    freq = Counter(partners.tolist())
    n = len(partners)
    want = {row_of(hand, 0, 2): 0.7 / 3, row_of(hand, 1, 2): 0.1, row_of(hand, 3, 1): 0.0,
            row_of(hand, 6, 3): 2 / 3}
    # The hand-computed utilities sum to 1 here, so they are the probabilities themselves.
    assert sum(want.values()) == pytest.approx(1.0)
    for k, p in want.items():
        assert freq[k] / n == pytest.approx(p, abs=0.015)


def test_guided_partner_zero_score_items_give_zero_util(hand):
    split, index, hist, target = hand
    row = row_of(hand, 2, 2)                                  # anchor [1, 3]
    partners = guided_draws(hand, row, [1.0, 0.0], draws=5000)
    # [3, 4] shares only item 3, whose score is 0: util 0, so it is never chosen.
    assert (partners == row_of(hand, 1, 2)).sum() == 0
    # [1, 2] (util 1/3) and [2, 3, 1] (util 2/3) are chosen about 1 : 2.
    a, b = int((partners == row_of(hand, 0, 2)).sum()), int((partners == row_of(hand, 6, 3)).sum())
    assert a + b == 5000 and b / 5000 == pytest.approx(2 / 3, abs=0.03)


def test_guided_partner_uniform_fallback(hand):
    split, index, hist, target = hand
    row = row_of(hand, 3, 1)                                  # anchor [5]: shares nothing
    draws = 8000
    partners = guided_draws(hand, row, [1.0], draws)
    group = [k for k in range(len(hist)) if target[k] == 9 and k != row]
    counts = Counter(partners.tolist())
    # All utilities are 0, so every candidate is drawn uniformly.
    assert all(util_ref(hist[row], [1.0], hist[k]) == 0 for k in group)
    assert set(counts) == set(group)
    assert all(abs(c / draws - 1 / len(group)) < 0.03 for c in counts.values()), counts


def test_guided_partner_singleton_and_training_rows_only(hand):
    split, index, hist, target = hand
    R = len(hist)
    # Every training row as anchor with uniform scores, in one batch, also with few candidates.
    width = max(len(h) for h in hist)
    anchor = torch.tensor([h + [0] * (width - len(h)) for h in hist])
    lengths = torch.tensor([len(h) for h in hist])
    scores = torch.where(anchor > 0, 1.0 / lengths.unsqueeze(1).float(), 0.0)
    for cap in (64, 2):
        for seed in range(20):
            g = torch.Generator().manual_seed(seed)
            got = index.guided_partner(torch.arange(R), anchor, lengths, scores, split.num_items,
                                       max_candidates=cap, generator=g).tolist()
            for r, p in enumerate(got):
                others = [k for k in range(R) if target[k] == target[r] and k != r]
                # A same-target OTHER training row when one exists, else the row itself.
                assert (p in others) if others else p == r
    # Nothing outside the training rows can be returned: validation/test targets 9 are unused.
    assert index.size.max() == 5


# =========================================================================== loss composition
LAMBDAS = dict(method__lambda_cl=0.3, method__lambda_sl=0.7, method__lambda_cl_pos=0.45,
               method__lambda_cl_neg=0.25, method__lambda_sl_pos=0.6)
EXPECTED_PARTS = {
    "sasrec": ({"rec"}, {"rec"}),
    "cl4srec": ({"rec", "cl"}, {"rec", "cl"}),
    "duorec": ({"rec", "sl"}, {"rec", "sl"}),
    "ec4srec_ssl": ({"rec", "cl", "sl"}, {"rec", "cl+", "cl-"}),
    "ec4srec_sl": ({"rec", "cl", "sl"}, {"rec", "sl+"}),
    "ec4srec": ({"rec", "cl", "sl"}, {"rec", "cl+", "cl-", "sl+"}),
}


def composition_trainer(tiny_file, tiny_dataset, method, **extra):
    config = tiny_config(tiny_file, method__name=method, method__explainer="saliency",
                         method__update_epochs="[2]", train__epochs=3, model__dropout=0,
                         model__attn_dropout=0, **{**LAMBDAS, **extra})
    return quiet(config, tiny_dataset)


def first_batch(trainer, n=12):
    return make_batch(trainer.data.items, trainer.data.train, np.arange(n))


def weighted(parts: dict, config, nested: bool = False) -> torch.Tensor:
    """L_rec + the lambda-weighted terms: Eq. 9 (flat), or Eq. 6 as printed when nested."""
    mc = config.method
    lam = {"cl": mc.lambda_cl, "sl": mc.lambda_sl, "cl+": mc.lambda_cl_pos,
           "cl-": mc.lambda_cl_neg, "sl+": mc.lambda_sl_pos}
    total = parts["rec"].clone()
    if nested and "cl+" in parts:
        total = total + mc.lambda_cl_pos * (parts["cl+"] + mc.lambda_cl_neg * parts["cl-"])
        return total + sum(lam[k] * parts[k] for k in parts if k in ("sl+",))
    return total + sum(lam[k] * v for k, v in parts.items() if k != "rec")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("weighting", ["flat", "nested"])
def test_loss_parts_before_and_after_first_update(tiny_file, tiny_dataset, method, weighting):
    trainer = composition_trainer(tiny_file, tiny_dataset, method, method__ssl_weighting=weighting)
    batch = first_batch(trainer)
    before, after = EXPECTED_PARTS[method]
    torch.manual_seed(0)
    total, parts = trainer.method.loss(batch, 1)
    # Before the first update: the warm-up terms (Sec. 4.1) or the method's own terms.
    assert set(parts) == before
    # The total is L_rec plus the lambda-weighted terms.
    assert torch.allclose(total.detach(), weighted(parts, trainer.config), rtol=1e-6, atol=1e-7)
    # Every part is a finite scalar.
    assert all(v.dim() == 0 and torch.isfinite(v) for v in parts.values())

    changed = trainer.method.on_epoch_start(2)
    # Only the guided methods update importance at their scheduled epoch.
    assert changed == (method in GUIDED)
    torch.manual_seed(0)
    total, parts = trainer.method.loss(batch, 2)
    # From the first update on: the explanation-guided terms of Eqs. 6-9.
    assert set(parts) == after
    # Eq. 9's flat weighting, or Eq. 6 as printed (nested) for method.ssl_weighting=nested.
    assert torch.allclose(total.detach(), weighted(parts, trainer.config, nested=weighting == "nested"),
                          rtol=1e-6, atol=1e-7)
    if "cl+" in parts:
        # The two weightings really differ here (so the check above can tell them apart).
        assert not torch.allclose(weighted(parts, trainer.config, nested=True),
                                  weighted(parts, trainer.config, nested=False))


@pytest.mark.parametrize("method", GUIDED)
def test_rec_only_warmup(tiny_file, tiny_dataset, method):
    trainer = composition_trainer(tiny_file, tiny_dataset, method, method__warmup_loss="rec_only")
    batch = first_batch(trainer)
    total, parts = trainer.method.loss(batch, 1)
    # With warmup_loss=rec_only the warm-up is L_rec alone.
    assert set(parts) == {"rec"} and torch.allclose(total.detach(), parts["rec"])
    trainer.method.on_epoch_start(2)
    _, parts = trainer.method.loss(batch, 2)
    # After the update the guided terms are the same as with the paper's warm-up.
    assert set(parts) == EXPECTED_PARTS[method][1]


def test_rec_part_is_full_softmax_cross_entropy(tiny_file, tiny_dataset):
    trainer = composition_trainer(tiny_file, tiny_dataset, "ec4srec")
    batch = first_batch(trainer)
    trainer.method.on_epoch_start(2)
    _, parts = trainer.method.loss(batch, 2)
    model = trainer.model
    h = model(batch.items, batch.lengths)
    # L_rec (Eq. 2) is cross-entropy of the target over all items, from the anchor's own forward.
    want = F.cross_entropy(model.scores(h), batch.targets - 1)
    assert torch.allclose(parts["rec"], want.detach(), rtol=1e-5, atol=1e-6)


def test_cl_part_contrasts_the_two_random_views(tiny_file, tiny_dataset):
    trainer = composition_trainer(tiny_file, tiny_dataset, "cl4srec")
    batch, mc, model = first_batch(trainer), trainer.config.method, trainer.model
    torch.manual_seed(3)
    _, parts = trainer.method.loss(batch, 1)
    torch.manual_seed(3)
    v1, l1, v2, l2 = augment.two_random_views(batch.items, batch.lengths, mc.augmentations,
                                              mc.crop_ratio, mc.mask_ratio, mc.reorder_ratio,
                                              model.mask_token)
    want = pair_nce(model(v1, l1), model(v2, l2), mc.tau, mc.similarity)
    # L_cl is the InfoNCE between the two augmented views of each sequence (Eq. 3).
    assert torch.allclose(parts["cl"], want.detach(), rtol=1e-5, atol=1e-6)


def test_sl_part_contrasts_anchor_with_random_same_target_row(tiny_file, tiny_dataset):
    trainer = composition_trainer(tiny_file, tiny_dataset, "duorec")
    batch, mc, model = first_batch(trainer), trainer.config.method, trainer.model
    torch.manual_seed(4)
    _, parts = trainer.method.loss(batch, 1)
    torch.manual_seed(4)
    index = trainer.method.index
    seq, length = index.histories(index.random_partner(batch.rows))
    want = pair_nce(model(batch.items, batch.lengths), model(seq, length), mc.tau, mc.similarity)
    # L_sl is the InfoNCE between h_u and the retrieved same-target sequence (Eq. 4).
    assert torch.allclose(parts["sl"], want.detach(), rtol=1e-5, atol=1e-6)


def test_sl_plus_uses_the_batch_rows_importance(tiny_file, tiny_dataset):
    trainer = composition_trainer(tiny_file, tiny_dataset, "ec4srec_sl")
    batch, mc, model = first_batch(trainer), trainer.config.method, trainer.model
    trainer.method.on_epoch_start(2)
    torch.manual_seed(5)
    _, parts = trainer.method.loss(batch, 2)
    torch.manual_seed(5)
    index = trainer.method.index
    scores = trainer.method.importance[batch.rows, :batch.items.shape[1]]
    partner = index.guided_partner(batch.rows, batch.items, batch.lengths, scores,
                                   trainer.data.num_items, mc.retrieval_candidates)
    seq, length = index.histories(partner)
    want = pair_nce(model(batch.items, batch.lengths), model(seq, length), mc.tau, mc.similarity)
    # L_sl+ (Eq. 8) contrasts h_u with the ertrl+ partner drawn with the rows' own scores.
    assert torch.allclose(parts["sl+"], want.detach(), rtol=1e-5, atol=1e-6)


def test_upstream_negative_loss_option(tiny_file, tiny_dataset):
    paper = composition_trainer(tiny_file, tiny_dataset, "ec4srec_ssl")
    upstream = composition_trainer(tiny_file, tiny_dataset, "ec4srec_ssl", method__neg_loss="upstream")
    batch = first_batch(paper)
    values = []
    for trainer in (paper, upstream):
        trainer.model.load_state_dict(paper.model.state_dict())
        trainer.method.on_epoch_start(2)
        torch.manual_seed(6)
        values.append(trainer.method.loss(batch, 2)[1])
    # Same views (same seed and weights): L_cl+ agrees, L_cl- differs with neg_loss=upstream.
    assert torch.allclose(values[0]["cl+"], values[1]["cl+"])
    assert not torch.allclose(values[0]["cl-"], values[1]["cl-"])


ZEROED = {"cl+": "method__lambda_cl_pos", "cl-": "method__lambda_cl_neg", "sl+": "method__lambda_sl_pos"}


@pytest.mark.parametrize("terms, views", [
    (("cl+", "cl-", "sl+"), 5), (("cl+", "cl-"), 4), (("cl+", "sl+"), 4), (("cl-", "sl+"), 5),
    (("cl+",), 3), (("cl-",), 4), (("sl+",), 2)])
def test_figure5_ablation_by_zeroed_lambdas(tiny_file, tiny_dataset, terms, views):
    zero = {ZEROED[t]: 0.0 for t in ZEROED if t not in terms}
    full = composition_trainer(tiny_file, tiny_dataset, "ec4srec")
    trainer = composition_trainer(tiny_file, tiny_dataset, "ec4srec", **zero)
    trainer.model.load_state_dict(full.model.state_dict())
    # The config names the guided terms left after zeroing (the Figure 5 combination).
    assert trainer.config.method.guided_terms() == terms
    batch = first_batch(trainer)
    results = []
    for t in (full, trainer):
        t.method.on_epoch_start(2)
        encoded = []
        forward = t.model.forward
        t.model.forward = lambda items, lengths, f=forward: encoded.append(len(items)) or f(items, lengths)
        torch.manual_seed(7)
        total, parts = t.method.loss(batch, 2)
        results.append((total, parts, sum(encoded)))
    (_, full_parts, _), (total, parts, rows) = results
    # Only the remaining terms are computed, and the total weights exactly those.
    assert set(parts) == {"rec", *terms}
    assert torch.allclose(total.detach(), weighted(parts, trainer.config), rtol=1e-6, atol=1e-7)
    # A zeroed term's views are not encoded (L_cl- alone still needs the positive views, its S+).
    assert rows == views * len(batch.rows)
    # The views drawn before the first skipped one are the full run's: their terms agree.
    for t in terms:
        if t != "sl+" or "cl-" in terms:
            assert torch.allclose(parts[t], full_parts[t], rtol=1e-5, atol=1e-6)


def test_guided_terms_of_each_method():
    from ec4srec.config import MethodConfig
    # The unguided methods have no guided terms; each variant has its equation's.
    assert [MethodConfig(name=m).guided_terms() for m in METHODS] == [
        (), (), (), ("cl+", "cl-"), ("sl+",), ("cl+", "cl-", "sl+")]
    # Eq. 6 as printed (nested) weights L_cl- by lambda_cl+ * lambda_cl-.
    nested = MethodConfig(name="ec4srec", ssl_weighting="nested", lambda_cl_pos=0.5, lambda_cl_neg=0.2)
    assert nested.guided_weights() == {"cl+": 0.5, "cl-": 0.1, "sl+": 0.1}


# =========================================================================== every pair trains
@pytest.mark.parametrize("objective, loss", [("prefix_rows", "full_softmax"),
                                             ("all_positions", "sampled_softmax")])
@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_and_backbone_trains(tiny_file, tiny_dataset, method, backbone, objective, loss):
    config = tiny_config(tiny_file, method__name=method, model__backbone=backbone,
                         method__explainer="saliency", method__update_epochs="[2]", train__epochs=2,
                         train__objective=objective, train__loss=loss, train__negatives=5)
    trainer = quiet(config, tiny_dataset)
    if objective == "all_positions":
        # Sequence rows: one per user with a training target (the tiny users fit in max_len),
        # and the importance scores / views are per sequence row.
        assert len(trainer.data.train) == len(np.unique(trainer.dataset.split.train.user))
    record = trainer.fit(run_test=False)
    history = trainer.state.history
    # Two epochs ran and every logged training loss is finite.
    assert record["epochs_run"] == 2
    assert all(np.isfinite(v) for h in history for k, v in h.items() if k.startswith("train/"))
    # The epochs logged the terms of their phase (warm-up in epoch 1, guided in epoch 2).
    keys = [{k.split("/", 1)[1] for k in h if k.startswith("train/")} - {"loss"} for h in history]
    before, after = EXPECTED_PARTS[method]
    assert keys == [before, after]


# =========================================================================== importance state
def test_importance_state_after_update(tiny_file, tiny_dataset):
    trainer = composition_trainer(tiny_file, tiny_dataset, "ec4srec")
    # No scores before the first update.
    assert trainer.method.importance is None
    trainer.method.on_epoch_start(2)
    imp = trainer.method.importance
    train = trainer.data.train
    # One row of scores per training row, max_len wide.
    assert imp.shape == (len(train), trainer.data.max_len)
    lengths = torch.as_tensor(train.length)
    real = torch.arange(imp.shape[1])[None, :] < lengths[:, None]
    # Scores are >= 0, sum to 1 over each row's real positions, and are 0 beyond its length.
    assert (imp >= 0).all()
    assert torch.allclose(imp.sum(1), torch.ones(len(train)), atol=1e-5)
    assert not imp[~real].any()
    # The method state carries the scores.
    assert trainer.method.state_dict()["importance"] is imp


class Interrupted(Exception):
    pass


def test_resume_after_update_equals_uninterrupted(tiny_file, tiny_dataset, tmp_path):
    config = tiny_config(tiny_file, method__name="ec4srec", method__explainer="saliency",
                         method__update_epochs="[2, 4]", train__epochs=5)
    seen: dict[str, dict[int, torch.Tensor]] = {"full": {}, "resumed": {}}

    def record_scores(key):
        def callback(trainer, epoch, metrics):
            imp = trainer.method.importance
            seen[key][epoch] = None if imp is None else imp.clone()
        return callback

    def interrupt(trainer, epoch, metrics):
        if epoch == 3:
            raise Interrupted

    full = quiet(config, tiny_dataset, tmp_path / "a", callbacks=[record_scores("full")])
    record_a = full.fit()
    with pytest.raises(Interrupted):
        quiet(config, tiny_dataset, tmp_path / "b", callbacks=[interrupt]).fit()
    ckpt = load_torch(tmp_path / "b" / CHECKPOINT)
    # The checkpoint written after epoch 3 (after the update at epoch 2) holds the scores.
    assert ckpt["loop"]["epoch"] == 3
    assert torch.equal(ckpt["method"]["importance"], seen["full"][3])

    resumed = quiet(config, tiny_dataset, tmp_path / "b", callbacks=[record_scores("resumed")])
    resumed.load_checkpoint(tmp_path / "b" / CHECKPOINT)
    # The resumed run continues with exactly the scores of the uninterrupted run.
    assert torch.equal(resumed.method.importance, seen["full"][3])
    record_b = resumed.fit()
    # No scores during the warm-up epoch 1; scores from the update at epoch 2 on.
    assert seen["full"][1] is None and seen["full"][2] is not None
    # The update at epoch 4 really changed the scores (so the comparisons below can fail).
    assert not torch.equal(seen["full"][4], seen["full"][3])
    # Scores after every later epoch, per-epoch history, metrics and weights all match.
    assert all(torch.equal(seen["resumed"][e], seen["full"][e]) for e in (4, 5))
    assert resumed.state.history == full.state.history
    timing = ("wall_time_s", "seconds_per_epoch", "hardware")
    assert {k: v for k, v in record_b.items() if k not in timing} == \
        {k: v for k, v in record_a.items() if k not in timing}
    wa, wb = full.model.state_dict(), resumed.model.state_dict()
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# =========================================================================== config
@pytest.mark.parametrize("method", GUIDED)
@pytest.mark.parametrize("backbone", ["gru4rec", "caser"])
def test_attention_explainer_needs_sasrec(tiny_file, method, backbone):
    # The attention explainer needs attention weights: only SASRec has them.
    with pytest.raises(ConfigError):
        tiny_config(tiny_file, method__name=method, method__updates=1,
                    method__explainer="attention", model__backbone=backbone)


def test_attention_explainer_accepted_on_sasrec(tiny_file):
    config = tiny_config(tiny_file, method__name="ec4srec", method__updates=1,
                         method__explainer="attention", model__backbone="sasrec")
    # On SASRec the same settings are valid (the rejection above is specific).
    assert config.method.explainer == "attention"


# =========================================================================== issue-9 options
def test_negative_view_loss_leaves_invalid_rows_out():
    gen = torch.Generator().manual_seed(0)
    neg, pos = torch.randn(5, 4, generator=gen), torch.randn(10, 4, generator=gen)
    valid = torch.tensor([True, False, True, True, False])
    from ec4srec.methods.losses import negative_view_loss, negative_view_supcon
    # Leaving rows out equals computing the loss on the kept rows alone (S+ unchanged).
    assert torch.allclose(negative_view_loss(neg, pos, 0.5, "dot", valid=valid),
                          negative_view_loss(neg[valid], pos, 0.5, "dot"), atol=1e-6)
    assert torch.allclose(negative_view_supcon(neg, pos, 0.2, "dot", valid=valid),
                          negative_view_supcon(neg[valid], pos, 0.2, "dot"), atol=1e-6)
    everyone = torch.ones(5, dtype=torch.bool)
    # All rows valid is the plain loss.
    assert torch.allclose(negative_view_loss(neg, pos, 1.0, "dot", valid=everyone),
                          negative_view_loss(neg, pos, 1.0, "dot"), atol=1e-6)


def test_length_one_rows_are_left_out_of_cl_minus(monkeypatch):
    import ec4srec.methods.contrastive as contrastive
    seen = {}

    def spy(neg, pos, tau, kind, valid=None):
        seen["valid"] = valid
        return neg.sum() * 0.0

    monkeypatch.setattr(contrastive, "negative_view_loss", spy)
    config = tiny_config(method__name="ec4srec_ssl", method__explainer="attention",
                         train__epochs=6, method__updates=1)
    from ec4srec.data import load_dataset
    dataset = load_dataset(config.data)
    trainer = quiet(config, dataset)
    trainer.method.on_epoch_start(trainer.method.update_epochs[0])
    rows = np.arange(len(dataset.split.train))[:40]
    batch = make_batch(dataset.split.items, dataset.split.train, rows)
    trainer.method.loss(batch, epoch=99)
    # Exactly the rows of length >= 2 take part in L_cl- (method.neg_min_length = 2).
    assert torch.equal(seen["valid"], batch.lengths >= 2)
    assert (batch.lengths == 1).any()
    config.method.neg_min_length = 1
    trainer.method.loss(batch, epoch=99)
    # neg_min_length = 1 keeps every row (upstream / the equation as printed).
    assert seen["valid"] is None


def test_occlusion_sign_positive_is_clamped_signed_difference():
    from ec4srec.explain import raw_attributions
    from ec4srec.models.sasrec import SASRec
    torch.manual_seed(0)
    model = SASRec(20, 8, 16, num_layers=1, num_heads=2, inner_size=32, init_std=0.5)
    items = torch.tensor([[3, 5, 7, 9], [2, 4, 0, 0]])
    lengths = torch.tensor([4, 2])
    absolute = raw_attributions(model, items, lengths, "occlusion")
    positive = raw_attributions(model, items, lengths, "occlusion", occlusion_sign="positive")
    signed = raw_attributions(model, items, lengths, "occlusion", occlusion_sign="positive") \
        - raw_attributions(model, items, lengths, "occlusion", occlusion_sign="abs")
    # max(d, 0) equals |d| where the removal lowered the score and 0 where it raised it.
    assert torch.all((positive == absolute) | (positive == 0))
    assert torch.all(signed <= 0)
    # Some position raises the score when removed in this model, so the variants differ.
    assert not torch.equal(positive, absolute)


@pytest.mark.parametrize("anchor, rows", [("rec", 32), ("dropout", 48)])
def test_sl_anchor_dropout_encodes_a_second_anchor(monkeypatch, anchor, rows):
    import ec4srec.methods.contrastive as contrastive
    from ec4srec.data import load_dataset
    config = tiny_config(method__name="duorec", method__sl_anchor=anchor)
    dataset = load_dataset(config.data)
    trainer = quiet(config, dataset)
    batch = make_batch(dataset.split.items, dataset.split.train, np.arange(16))
    anchors, encoded = [], []
    original = contrastive.pair_nce
    monkeypatch.setattr(contrastive, "pair_nce",
                        lambda a, b, tau, sim: anchors.append(a) or original(a, b, tau, sim))
    forward = trainer.model.forward
    trainer.model.forward = lambda items, lengths: encoded.append(len(items)) or forward(items, lengths)
    trainer.model.train()
    trainer.method.loss(batch, epoch=1)
    # rec: anchors + retrieved rows are encoded; dropout: the anchors once more (DuoRec's us_x).
    assert sum(encoded) == rows
    trainer.model.eval()
    anchors.clear()
    trainer.method.loss(batch, epoch=1)
    with torch.no_grad():
        h = forward(batch.items, batch.lengths)
    # Either way L_sl's anchor encodes the batch's own rows (equal in eval mode, no dropout).
    assert torch.allclose(anchors[0], h, atol=1e-6)
