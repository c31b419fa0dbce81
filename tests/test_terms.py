"""The term table (methods/terms.py): views in their declared order, each term's views, the
rows of each method and phase, and the anchor encoded in or out of the pool."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ec4srec.config import MethodConfig
from ec4srec.data.batches import make_batch
from ec4srec.methods import terms
from ec4srec.trainer import Trainer

from conftest import tiny_config

FIGURE5 = [("cl+",), ("cl-",), ("sl+",), ("cl+", "cl-"), ("cl+", "sl+"), ("cl-", "sl+"),
           ("cl+", "cl-", "sl+")]
LAMBDA = {"cl+": "lambda_cl_pos", "cl-": "lambda_cl_neg", "sl+": "lambda_sl_pos"}


def guided_trainer(tiny_file, tiny_dataset, method="ec4srec", update=True, **extra) -> Trainer:
    """A trainer of ``method``, its importance scores computed (the guided phase) if ``update``."""
    config = tiny_config(tiny_file, method__name=method, method__explainer="saliency",
                         method__update_epochs="[2]", train__epochs=3, **extra)
    trainer = Trainer(config, tiny_dataset, log=lambda m: None)
    if update:
        trainer.method.on_epoch_start(2)
    return trainer


def test_views_are_built_in_the_declared_order(tiny_file, tiny_dataset):
    trainer = guided_trainer(tiny_file, tiny_dataset, method__sl_anchor="dropout")
    batch = make_batch(trainer.data.items, trainer.data.train, np.arange(10))
    views = trainer.method.build_views(batch, terms.VIEWS)
    # Every view is built, in terms.VIEWS order (the order of the RNG draws and of the pool).
    assert tuple(views) == terms.VIEWS
    # Each view holds one row per batch row.
    assert all(items.shape[0] == lengths.shape[0] == 10 for items, lengths in views.values())


def test_every_row_names_known_terms_and_views():
    # Every term reads declared views only.
    assert all(set(v) <= set(terms.VIEWS) for v in terms.TERM_VIEWS.values())
    # Every row of the table weights known terms, and L_rec first.
    for method, phase in terms.TABLE:
        mc = MethodConfig(name=method)
        names = terms.terms_of(terms.weights(mc, phase))
        assert names[0] == "rec" and set(names) <= set(terms.TERM_VIEWS)


@pytest.mark.parametrize("method", terms.GUIDED)
@pytest.mark.parametrize("combination", FIGURE5)
@pytest.mark.parametrize("weighting", ["flat", "nested"])
def test_guided_rows_agree_with_the_config(method, combination, weighting):
    mc = MethodConfig(name=method, ssl_weighting=weighting,
                      **{LAMBDA[t]: 0.0 for t in LAMBDA if t not in combination})
    row = terms.weights(mc, terms.phase_of(mc, updated=True))
    # The guided terms left in the row are MethodConfig.guided_terms() (Figure 5's combination).
    assert terms.terms_of(row)[1:] == mc.guided_terms()


def test_zeroed_terms_drop_their_views():
    mc = MethodConfig(name="ec4srec", lambda_cl_pos=0.0, lambda_sl_pos=0.0)
    names = terms.terms_of(terms.weights(mc, "guided"))
    # Only L_rec and L_cl- are left ...
    assert names == ("rec", "cl-")
    # ... and L_cl- still reads the positive views, its S+.
    assert terms.views_of(names, mc.sl_anchor) == ("anchor", "pos1", "pos2", "neg")


@pytest.mark.parametrize("method, updated, options, phase", [
    ("cl4srec", False, {}, "train"),
    ("duorec", True, {"warmup_loss": "rec_only", "ssl_weighting": "nested"}, "train"),
    ("ec4srec_ssl", False, {}, "warmup"),
    ("ec4srec_sl", False, {"warmup_loss": "rec_only"}, "warmup/rec_only"),
    ("ec4srec", True, {"warmup_loss": "rec_only"}, "guided"),
    ("ec4srec", True, {"ssl_weighting": "nested"}, "guided/nested"),
])
def test_phase_of(method, updated, options, phase):
    # The unguided methods have one phase; the guided ones warm up, then train guided.
    assert terms.phase_of(MethodConfig(name=method, **options), updated) == phase


def test_nested_and_flat_rows_sum_as_eqs_6_and_9():
    values = {"rec": torch.tensor(1.5), "cl+": torch.tensor(0.7), "cl-": torch.tensor(2.3),
              "sl+": torch.tensor(0.9)}
    mc = MethodConfig(name="ec4srec", lambda_cl_pos=0.45, lambda_cl_neg=0.25, lambda_sl_pos=0.6)
    flat = terms.weighted_sum(terms.weights(mc, "guided"), values)
    nested = terms.weighted_sum(terms.weights(mc, "guided/nested"), values)
    r, p, n, s = values.values()
    # Eq. 9: L_rec + (l_cl+ L_cl+ + l_cl- L_cl-) + l_sl+ L_sl+, summed in that grouping.
    assert torch.equal(flat, r + (0.45 * p + 0.25 * n) + 0.6 * s)
    # Eq. 6 as printed: L_cl- weighted by l_cl+ l_cl- inside the parenthesis.
    assert torch.equal(nested, r + 0.45 * (p + 0.25 * n) + 0.6 * s)


@pytest.mark.parametrize("method, update, extra", [
    ("duorec", False, {}), ("ec4srec", True, {}),
    ("ec4srec", False, {"method__warmup_loss": "rec_only"})])      # nothing left to pool
def test_anchor_encoded_outside_the_pool(tiny_file, tiny_dataset, method, update, extra):
    trainer = guided_trainer(tiny_file, tiny_dataset, method, update, **extra)
    batch = make_batch(trainer.data.items, trainer.data.train, np.arange(12))
    trainer.model.eval()                            # no dropout: both encodings agree
    results = []
    for pool_anchor in (True, False):
        trainer.method.pool_anchor = pool_anchor
        calls = []
        forward = trainer.model.forward
        trainer.model.forward = (lambda items, lengths:
                                 calls.append(len(items)) or forward(items, lengths))
        torch.manual_seed(3)
        total, parts = trainer.method.loss(batch, 2)
        trainer.model.forward = forward
        results.append((total, parts, calls))
    (total, parts, pooled_calls), (total_apart, parts_apart, calls) = results
    # pool_anchor=False: rec_forward encodes the anchor in a pass of its own; no row more.
    assert 12 in calls and sum(calls) == sum(pooled_calls)
    # The terms and the total are those of the pooled anchor (rows are independent).
    assert parts.keys() == parts_apart.keys()
    assert all(torch.allclose(parts[k], parts_apart[k], atol=1e-6) for k in parts)
    assert torch.allclose(total, total_apart, atol=1e-6)
