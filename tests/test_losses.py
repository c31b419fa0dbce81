"""The contrastive losses (Eqs. 3, 4, 8 and L_cl- of Section 4.4.1) against direct per-view
Python-loop references written from the paper's equations (docs/methods.md conventions:
every similarity divided by tau; per-view terms averaged)."""
from __future__ import annotations

import inspect
import math

import pytest
import torch

from ec4srec.config import MethodConfig
from ec4srec.methods.losses import negative_view_loss, negative_view_supcon, pair_nce, similarity

KINDS = ("dot", "cosine")
TAUS = (0.5, 1.0, 1.5)


# --------------------------------------------------------------------------- references
def sim_ref(a: list[float], b: list[float], kind: str) -> float:
    """sim(a, b): a raw dot product, or the cosine of the angle between a and b."""
    dot = sum(x * y for x, y in zip(a, b))
    if kind == "dot":
        return dot
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb)


def rows(t: torch.Tensor) -> list[list[float]]:
    return t.detach().double().tolist()


def pair_nce_ref(z1: torch.Tensor, z2: torch.Tensor, tau: float, kind: str) -> float:
    """Eq. 3 / Eq. 4 per view: view i of the 2B views has its partner as the positive and
    every other view j != i in the denominator; averaged over the 2B views."""
    views = rows(z1) + rows(z2)
    B = len(views) // 2
    total = 0.0
    for i in range(2 * B):
        partner = (i + B) % (2 * B)
        num = math.exp(sim_ref(views[i], views[partner], kind) / tau)
        den = sum(math.exp(sim_ref(views[i], views[j], kind) / tau)
                  for j in range(2 * B) if j != i)
        total += -math.log(num / den)
    return total / (2 * B)


def negative_view_ref(neg: torch.Tensor, pos: torch.Tensor, tau: float, kind: str) -> float:
    """L_cl- (Section 4.4.1): for negative view n_u and every other negative view n_u',
    -log exp(s(n_u, n_u')/tau) / (exp(s(n_u, n_u')/tau) + sum_{s in S+} exp(s(n_u, s)/tau)),
    averaged over the |S-| - 1 others, then over u."""
    N, P = rows(neg), rows(pos)
    B = len(N)
    outer = 0.0
    for u in range(B):
        inner = 0.0
        for v in range(B):
            if v == u:
                continue
            num = math.exp(sim_ref(N[u], N[v], kind) / tau)
            den = num + sum(math.exp(sim_ref(N[u], s, kind) / tau) for s in P)
            inner += -math.log(num / den)
        outer += inner / (B - 1)
    return outer / B


def supcon_ref(neg: torch.Tensor, pos: torch.Tensor, tau: float, kind: str) -> float:
    """SupCon with the negative views as one class: anchor = a negative view, its positives =
    the other negative views, denominator = ALL other views (negatives and positives)."""
    N, P = rows(neg), rows(pos)
    allv = N + P
    B = len(N)
    outer = 0.0
    for u in range(B):
        den = sum(math.exp(sim_ref(N[u], allv[j], kind) / tau) for j in range(len(allv)) if j != u)
        inner = 0.0
        for v in range(B):
            if v != u:
                inner += -math.log(math.exp(sim_ref(N[u], N[v], kind) / tau) / den)
        outer += inner / (B - 1)
    return outer / B


def rand(seed: int, *shape: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


# --------------------------------------------------------------------------- similarity
@pytest.mark.parametrize("kind", KINDS)
def test_similarity_matches_reference(kind):
    a, b = rand(1, 3, 4), rand(2, 5, 4)
    got = similarity(a, b, kind)
    want = torch.tensor([[sim_ref(x, y, kind) for y in rows(b)] for x in rows(a)], dtype=torch.float64)
    # sim(a_i, b_j) is the dot product (or cosine) of row i of a and row j of b.
    assert got.shape == (3, 5) and torch.allclose(got, want, atol=1e-12)


# --------------------------------------------------------------------------- pair_nce
@pytest.mark.parametrize("B", [3, 4, 5])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("tau", TAUS)
def test_pair_nce_matches_per_view_reference(B, kind, tau):
    z1, z2 = rand(10 + B, B, 4), rand(20 + B, B, 4)
    got = float(pair_nce(z1, z2, tau, kind))
    # The batched loss is the mean over the 2B views of Eq. 3's per-view term.
    assert got == pytest.approx(pair_nce_ref(z1, z2, tau, kind), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_pair_nce_depends_on_pairing(kind):
    z1, z2 = rand(3, 4, 4), rand(4, 4, 4)
    # Symmetric in its two arguments (both directions are averaged).
    assert float(pair_nce(z1, z2, 1.0, kind)) == pytest.approx(float(pair_nce(z2, z1, 1.0, kind)), rel=1e-12)
    # Re-pairing the views (shifting z2 only) changes the loss: the positive really is the partner.
    assert float(pair_nce(z1, z2, 1.0, kind)) != pytest.approx(float(pair_nce(z1, z2.roll(1, 0), 1.0, kind)))


def test_pair_nce_rewards_aligned_pairs():
    z1 = rand(5, 4, 4, scale=3.0)
    # Identical partners give a lower loss than unrelated partners.
    assert (float(pair_nce(z1, z1.clone(), 1.0, "dot"))
            < float(pair_nce(z1, rand(6, 4, 4, scale=3.0), 1.0, "dot")))


# --------------------------------------------------------------------------- L_cl-
@pytest.mark.parametrize("B", [2, 3, 5])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("tau", TAUS)
def test_negative_view_loss_matches_paper_equation(B, kind, tau):
    neg, pos = rand(30 + B, B, 4), rand(40 + B, 2 * B, 4)
    got = float(negative_view_loss(neg, pos, tau, kind))
    # The batched L_cl- equals the loop over (u, u') of the paper's equation, S+ = 2B views.
    assert got == pytest.approx(negative_view_ref(neg, pos, tau, kind), rel=1e-9, abs=1e-12)


def test_negative_view_loss_uses_every_positive_view():
    neg, pos = rand(50, 3, 4), rand(51, 6, 4)
    # Dropping one positive view from S+ changes the loss (all of S+ is in the denominator).
    assert float(negative_view_loss(neg, pos, 1.0, "dot")) != pytest.approx(
        float(negative_view_loss(neg, pos[:-1], 1.0, "dot")))
    # Pulling the negative views together lowers the loss.
    close = neg[:1].repeat(3, 1) + 0.01 * rand(52, 3, 4)
    assert (float(negative_view_loss(close * 3, pos, 1.0, "dot"))
            < float(negative_view_loss(neg * 3, pos, 1.0, "dot")))


@pytest.mark.parametrize("fn", [negative_view_loss, negative_view_supcon])
def test_single_negative_view_gives_zero_with_gradient(fn):
    neg = rand(60, 1, 4).requires_grad_()
    pos = rand(61, 2, 4).requires_grad_()
    loss = fn(neg, pos, 1.0, "dot")
    # One negative view has no other negative view: the loss is exactly 0 ...
    assert float(loss.detach()) == 0.0
    # ... and still a graph-connected tensor that backward() accepts.
    assert loss.requires_grad
    loss.backward()
    assert neg.grad is not None and torch.all(neg.grad == 0)


# --------------------------------------------------------------------------- upstream SupCon
@pytest.mark.parametrize("B", [2, 3, 5])
@pytest.mark.parametrize("kind", KINDS)
def test_negative_view_supcon_matches_reference(B, kind):
    neg, pos = rand(70 + B, B, 4, scale=0.7), rand(80 + B, 2 * B, 4, scale=0.7)
    got = float(negative_view_supcon(neg, pos, 0.1, kind))
    # SupCon with the negatives as one class, denominator over all 3B - 1 other views, tau 0.1.
    assert got == pytest.approx(supcon_ref(neg, pos, 0.1, kind), rel=1e-9, abs=1e-12)


def test_supcon_default_temperature_is_point_one():
    neg, pos = rand(90, 3, 4, scale=0.5), rand(91, 6, 4, scale=0.5)
    tau = MethodConfig().neg_tau
    # The config's default temperature (method.neg_tau) is upstream's 0.1.
    assert float(negative_view_supcon(neg, pos, tau, "dot")) == pytest.approx(
        supcon_ref(neg, pos, 0.1, "dot"), rel=1e-9)


@pytest.mark.parametrize("fn", [similarity, pair_nce, negative_view_loss, negative_view_supcon])
def test_losses_keep_no_defaults_of_their_own(fn):
    params = inspect.signature(fn).parameters
    # Temperature and similarity come from the caller (the config's), never from a default here.
    assert all(params[p].default is inspect.Parameter.empty for p in ("tau", "kind") if p in params)


# --------------------------------------------------------------------------- gradients, invariance
LOSSES = {
    "pair_nce": lambda a, b, n: pair_nce(a, b, 0.7, "dot"),
    "pair_nce_cos": lambda a, b, n: pair_nce(a, b, 0.7, "cosine"),
    "neg": lambda a, b, n: negative_view_loss(n, torch.cat([a, b]), 0.7, "dot"),
    "neg_cos": lambda a, b, n: negative_view_loss(n, torch.cat([a, b]), 0.7, "cosine"),
    "supcon": lambda a, b, n: negative_view_supcon(n, torch.cat([a, b]), 0.1, "dot"),
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_gradients_flow_and_are_finite(name):
    a, b, n = (rand(100 + i, 4, 4).float().requires_grad_() for i in range(3))
    loss = LOSSES[name](a, b, n)
    loss.backward()
    used = (a, b) if name.startswith("pair") else (a, b, n)
    # Every input the loss depends on receives a finite, non-zero gradient.
    for t in used:
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(LOSSES))
def test_invariant_to_consistent_batch_permutation(name):
    a, b, n = (rand(200 + i, 5, 4) for i in range(3))
    perm = torch.tensor([3, 0, 4, 1, 2])
    # Reordering users (the same permutation for every view of the batch) leaves the loss unchanged.
    assert float(LOSSES[name](a[perm], b[perm], n[perm])) == pytest.approx(
        float(LOSSES[name](a, b, n)), rel=1e-10)


def test_negative_view_loss_invariant_to_positive_set_order():
    neg, pos = rand(300, 4, 4), rand(301, 8, 4)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    # S+ is a set: its order does not matter (neither for L_cl- nor for SupCon).
    assert float(negative_view_loss(neg, pos[perm], 1.0, "dot")) == pytest.approx(
        float(negative_view_loss(neg, pos, 1.0, "dot")), rel=1e-10)
    assert float(negative_view_supcon(neg, pos[perm], 0.1, "dot")) == pytest.approx(
        float(negative_view_supcon(neg, pos, 0.1, "dot")), rel=1e-10)
