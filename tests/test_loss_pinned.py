"""Every method's loss, pinned on fixed seeds.

The values below were recorded from the loss code of main 12d0a95 (before the contrastive loss
became a table of named terms) and must never change by a refactoring: the total, every part and
a fingerprint of the gradients of one ``method.loss(batch, epoch)`` per case, with dropout on (so
the order in which views are built and pooled, which fixes the RNG draws, is pinned too). Each
case draws its own dropout banks, so a case does not depend on what ran before it.
The values are bit-exact on the machine that recorded them (an Intel CPU with AVX-512); on
another CPU, MKL's kernels round differently in the last bits (on an AMD EPYC: at most 1.3e-7
relative, the gradient fingerprints mostly), so the pin holds to :data:`PIN_TOLERANCE`, a few
float32 ulps; a change in what is computed or in the order of RNG draws moves the values by far
more. (Same seed, same numbers on one machine, exactly: tests/test_trainer.py.)
Regenerate (only for an intended change of numbers) with
``PYTHONPATH=. python tests/test_loss_pinned.py`` and paste its output over ``PINNED``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ec4srec.data import load_dataset
from ec4srec.data.batches import make_batch
from ec4srec.models import refresh_dropout_banks
from ec4srec.trainer import Trainer

from conftest import random_sequences, tiny_config, write_sequences

PIN_TOLERANCE = 1e-6      # relative: float32 rounding across CPUs (module docstring)
LAMBDAS = dict(method__lambda_cl=0.3, method__lambda_sl=0.7, method__lambda_cl_pos=0.45,
               method__lambda_cl_neg=0.25, method__lambda_sl_pos=0.6)

# case -> (method, phase, config overrides); phase "warmup" is before the first importance
# update (epoch 1), "guided" after it (importance computed at epoch 2).
CASES = {
    "sasrec": ("sasrec", "warmup", {}),
    "sasrec-random-batches": ("sasrec", "warmup", {"train__bucket_batches": 1}),
    "cl4srec": ("cl4srec", "warmup", {}),
    "cl4srec-lambda0": ("cl4srec", "warmup", {"method__lambda_cl": 0.0}),
    "duorec": ("duorec", "warmup", {}),
    "duorec-sl_anchor-dropout": ("duorec", "warmup", {"method__sl_anchor": "dropout"}),
    "ec4srec_ssl-warmup": ("ec4srec_ssl", "warmup", {}),
    "ec4srec_ssl-guided": ("ec4srec_ssl", "guided", {}),
    "ec4srec_ssl-nested": ("ec4srec_ssl", "guided", {"method__ssl_weighting": "nested"}),
    "ec4srec_ssl-neg_loss-upstream": ("ec4srec_ssl", "guided", {"method__neg_loss": "upstream"}),
    "ec4srec_sl-warmup": ("ec4srec_sl", "warmup", {}),
    "ec4srec_sl-guided": ("ec4srec_sl", "guided", {}),
    "ec4srec-warmup": ("ec4srec", "warmup", {}),
    "ec4srec-warmup-rec_only": ("ec4srec", "warmup", {"method__warmup_loss": "rec_only"}),
    "ec4srec-warmup-sl_anchor-dropout": ("ec4srec", "warmup", {"method__sl_anchor": "dropout"}),
    "ec4srec-guided": ("ec4srec", "guided", {}),
    "ec4srec-guided-nested": ("ec4srec", "guided", {"method__ssl_weighting": "nested"}),
    "ec4srec-guided-nested-no-cl-": ("ec4srec", "guided", {"method__ssl_weighting": "nested",
                                                            "method__lambda_cl_neg": 0.0}),
    "ec4srec-guided-sl_anchor-dropout": ("ec4srec", "guided", {"method__sl_anchor": "dropout"}),
    "ec4srec-guided-k_counts-important": ("ec4srec", "guided", {"method__k_counts": "important",
                                                                 "method__neg_min_length": 1}),
    "ec4srec-figure5-no-cl-": ("ec4srec", "guided", {"method__lambda_cl_neg": 0.0}),
    "ec4srec-figure5-cl-only": ("ec4srec", "guided", {"method__lambda_cl_pos": 0.0,
                                                      "method__lambda_sl_pos": 0.0}),
    "ec4srec-gru4rec-guided": ("ec4srec", "guided", {"model__backbone": "gru4rec"}),
    "ec4srec-caser-guided": ("ec4srec", "guided", {"model__backbone": "caser"}),
}


def measure(tmp_path, case: str) -> dict[str, float]:
    """{"total", every part, "grad"} of one loss call of ``case`` (grad: sum of |gradient| over
    all parameters, float64)."""
    method, phase, overrides = CASES[case]
    data_file = write_sequences(tmp_path / "tiny.txt", random_sequences())
    config = tiny_config(data_file, method__name=method, method__explainer="saliency",
                         method__update_epochs="[2]", train__epochs=3, **{**LAMBDAS, **overrides})
    trainer = Trainer(config, load_dataset(config.data), log=lambda m: None)
    split = trainer.data
    batch = make_batch(split.items, split.train, np.arange(24))
    epoch = 1
    if phase == "guided":
        epoch = 2
        assert trainer.method.on_epoch_start(epoch)
    trainer.model.train()
    torch.manual_seed(11)
    refresh_dropout_banks(trainer.model)   # the dropout masks are this case's (as each epoch's)
    total, parts = trainer.method.loss(batch, epoch)
    total.backward()
    grad = sum(float(p.grad.double().abs().sum()) for p in trainer.model.parameters()
               if p.grad is not None)
    return {"total": float(total.detach()), **{k: float(v) for k, v in parts.items()}, "grad": grad}


# Recorded from main 12d0a95's loss code (see the module docstring).
PINNED: dict[str, dict[str, float]] = {
    'sasrec': {
        'total': 3.429219961166382, 'rec': 3.429219961166382, 'grad': 21.914909877546147},
    'sasrec-random-batches': {
        'total': 3.400573492050171, 'rec': 3.400573492050171, 'grad': 21.227234110686446},
    'cl4srec': {
        'total': 4.6020965576171875, 'rec': 3.409320592880249, 'cl': 3.9759206771850586,
        'grad': 87.53599568327016},
    'cl4srec-lambda0': {
        'total': 3.400573492050171, 'rec': 3.400573492050171, 'grad': 21.227234110686446},
    'duorec': {
        'total': 6.949399471282959, 'rec': 3.381760835647583, 'sl': 5.0966267585754395,
        'grad': 192.11082661295424},
    'duorec-sl_anchor-dropout': {
        'total': 6.662229537963867, 'rec': 3.42669415473938, 'sl': 4.622193813323975,
        'grad': 218.5814917477011},
    'ec4srec_ssl-warmup': {
        'total': 7.926502704620361, 'rec': 3.4040892124176025, 'cl': 3.859473466873169,
        'sl': 4.806530952453613, 'grad': 223.20647962678214},
    'ec4srec_ssl-guided': {
        'total': 5.732178688049316, 'rec': 3.396804094314575, 'cl+': 2.492690324783325,
        'cl-': 4.854657173156738, 'grad': 130.37059691331342},
    'ec4srec_ssl-nested': {
        'total': 5.064663887023926, 'rec': 3.396804094314575, 'cl+': 2.492690324783325,
        'cl-': 4.854657173156738, 'grad': 116.38511181293765},
    'ec4srec_ssl-neg_loss-upstream': {
        'total': 6.354266166687012, 'rec': 3.396804094314575, 'cl+': 2.492690324783325,
        'cl-': 7.3430070877075195, 'grad': 176.37755534694148},
    'ec4srec_sl-warmup': {
        'total': 7.926502704620361, 'rec': 3.4040892124176025, 'cl': 3.859473466873169,
        'sl': 4.806530952453613, 'grad': 223.20647962678214},
    'ec4srec_sl-guided': {
        'total': 6.123855113983154, 'rec': 3.395284652709961, 'sl+': 4.547617435455322,
        'grad': 188.01566074397286},
    'ec4srec-warmup': {
        'total': 7.926502704620361, 'rec': 3.4040892124176025, 'cl': 3.859473466873169,
        'sl': 4.806530952453613, 'grad': 223.20647962678214},
    'ec4srec-warmup-rec_only': {
        'total': 3.400573492050171, 'rec': 3.400573492050171, 'grad': 21.227234110686446},
    'ec4srec-warmup-sl_anchor-dropout': {
        'total': 7.870113849639893, 'rec': 3.4079811573028564, 'cl': 3.4513437747955322,
        'sl': 4.895328044891357, 'grad': 249.65586601250877},
    'ec4srec-guided': {
        'total': 8.412067413330078, 'rec': 3.3974103927612305, 'cl+': 3.0572187900543213,
        'cl-': 4.464235305786133, 'sl+': 4.20474910736084, 'grad': 238.39921596279908},
    'ec4srec-guided-nested': {
        'total': 7.798234939575195, 'rec': 3.3974103927612305, 'cl+': 3.0572187900543213,
        'cl-': 4.464235305786133, 'sl+': 4.20474910736084, 'grad': 226.0159840145647},
    'ec4srec-guided-nested-no-cl-': {
        'total': 7.452147006988525, 'rec': 3.4009077548980713, 'cl+': 3.396185874938965,
        'sl+': 4.204925537109375, 'grad': 246.45987812172882},
    'ec4srec-guided-sl_anchor-dropout': {
        'total': 8.794554710388184, 'rec': 3.4149093627929688, 'cl+': 3.361741781234741,
        'cl-': 4.876172065734863, 'sl+': 4.413031101226807, 'grad': 242.4039402696794},
    'ec4srec-guided-k_counts-important': {
        'total': 8.552803039550781, 'rec': 3.386777877807617, 'cl+': 3.025404930114746,
        'cl-': 4.582155704498291, 'sl+': 4.431755542755127, 'grad': 230.5176493414003},
    'ec4srec-figure5-no-cl-': {
        'total': 7.452147006988525, 'rec': 3.4009077548980713, 'cl+': 3.396185874938965,
        'sl+': 4.204925537109375, 'grad': 246.45987812172882},
    'ec4srec-figure5-cl-only': {
        'total': 4.61046838760376, 'rec': 3.396804094314575, 'cl-': 4.854657173156738,
        'grad': 56.755639013393335},
    'ec4srec-gru4rec-guided': {
        'total': 8.840676307678223, 'rec': 3.4012019634246826, 'cl+': 2.4141576290130615,
        'cl-': 4.894772529602051, 'sl+': 5.215683937072754, 'grad': 2193.6715126308154},
    'ec4srec-caser-guided': {
        'total': 8.703664779663086, 'rec': 3.40114688873291, 'cl+': 4.309932231903076,
        'cl-': 4.313138484954834, 'sl+': 3.807938814163208, 'grad': 968.6577637692637},
}


@pytest.mark.parametrize("case", list(CASES))
def test_loss_values_are_pinned(tmp_path, case):
    got = measure(tmp_path, case)
    # The total, every part and the gradients equal the recorded values to float32 rounding.
    assert got == {k: pytest.approx(v, rel=PIN_TOLERANCE, abs=0.0) for k, v in PINNED[case].items()}


if __name__ == "__main__":
    import tempfile
    from pathlib import Path

    torch.set_num_threads(1)
    print("PINNED: dict[str, dict[str, float]] = {")
    for name in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            values = measure(Path(tmp), name)
        lines, line = [], " " * 7
        for entry in (f"{k!r}: {v!r}," for k, v in values.items()):   # at most 100 columns
            if len(line) + 1 + len(entry) > 100:
                lines.append(line)
                line = " " * 7
            line += " " + entry
        print(f"    {name!r}: {{\n" + "\n".join(lines + [line[:-1] + "},"]))
    print("}")
