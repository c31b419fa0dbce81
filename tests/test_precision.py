"""train.precision: config key, per-device resolution, bf16 training and the loss head."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch.nn import functional as F

import ec4srec.models.fast_ops as fast_ops
import ec4srec.precision as precision_mod
from ec4srec.config import Config, ConfigError
from ec4srec.models.base import FastDropout
from ec4srec.models.fast_ops import full_softmax_ce
from ec4srec.precision import autocast, resolve_precision
from ec4srec.trainer import Trainer

from conftest import tiny_config

METRIC_TOL = 0.05        # absolute, on every validation/test HR@K and NDCG@K of the tiny run
LOSS_RTOL = 0.02         # relative, on every epoch's mean training loss


def test_precision_key_is_validated():
    # Every documented value is accepted and round-trips through the config dict.
    for value in ("auto", "fp32", "bf16"):
        config = Config().with_overrides([f"train.precision={value}"])
        assert Config.from_dict(config.to_dict()).train.precision == value
    # Anything else is rejected with a ConfigError naming the dotted key.
    for bad in ("fp16", "float32", "16"):
        with pytest.raises(ConfigError, match=r"train\.precision"):
            Config().with_overrides([f"train.precision={bad}"])
    # The default is auto.
    assert Config().train.precision == "auto"


def test_precision_is_resolved_per_device(monkeypatch):
    # auto on a CPU is the CPU constant (fp32 today) ...
    assert resolve_precision("auto", "cpu") == precision_mod.CPU_AUTO_PRECISION == "fp32"
    # ... and follows that one constant when it is changed.
    monkeypatch.setattr(precision_mod, "CPU_AUTO_PRECISION", "bf16")
    assert resolve_precision("auto", torch.device("cpu")) == "bf16"
    # auto on CUDA is bf16 where the GPU runs bf16 natively ...
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_precision("auto", "cuda:0") == "bf16"
    # ... and fp32 where it would only emulate bf16.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert resolve_precision("auto", "cuda") == "fp32"
    # Explicit values are kept on every device.
    assert resolve_precision("fp32", "cuda") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    # Unknown values raise.
    with pytest.raises(ValueError):
        resolve_precision("fp16", "cpu")


def test_cpu_trainer_resolves_auto_to_the_cpu_constant(tiny_file, tiny_dataset):
    trainer = Trainer(tiny_config(tiny_file), tiny_dataset, log=lambda m: None)
    # The default train.precision=auto gives fp32 on the CPU ...
    assert trainer.config.train.precision == "auto" and trainer.precision == "fp32"
    # ... and the record (metrics.json) holds the resolved value.
    assert trainer.metrics_record(test=None)["precision"] == "fp32"


@pytest.mark.parametrize("backbone,method", [("sasrec", "sasrec"), ("gru4rec", "cl4srec"),
                                             ("caser", "duorec")])
def test_bf16_training_on_cpu_matches_fp32(tiny_file, tiny_dataset, tmp_path, backbone, method):
    records, histories = {}, {}
    for prec in ("fp32", "bf16"):
        out = tmp_path / prec
        config = tiny_config(tiny_file, train__precision=prec, model__backbone=backbone,
                             method__name=method)
        trainer = Trainer(config, tiny_dataset, output_dir=out, log=lambda m: None)
        records[prec] = trainer.fit()
        histories[prec] = trainer.state.history
        # The resolved precision is recorded in metrics.json.
        assert json.loads((out / "metrics.json").read_text())["precision"] == prec
    # bf16 ran every epoch ...
    assert len(histories["bf16"]) == 3
    # ... with a finite training loss in each.
    assert all(math.isfinite(h["train/loss"]) for h in histories["bf16"])
    # Training losses agree with fp32 to LOSS_RTOL (relative) in every epoch.
    for a, b in zip(histories["fp32"], histories["bf16"]):
        assert b["train/loss"] == pytest.approx(a["train/loss"], rel=LOSS_RTOL)
    # Validation and test metrics agree with fp32 to METRIC_TOL (absolute).
    for split in ("valid", "test"):
        for key, value in records["fp32"][split].items():
            assert records["bf16"][split][key] == pytest.approx(value, abs=METRIC_TOL), key


def test_full_softmax_ce_bf16_h_under_cpu_autocast(monkeypatch):
    gen = torch.Generator().manual_seed(3)
    N, d, B = 300, 16, 40
    weight = torch.randn(N + 2, d, generator=gen).requires_grad_()
    h = torch.randn(B, d, generator=gen).to(torch.bfloat16).requires_grad_()
    targets = torch.randint(0, N, (B,), generator=gen)
    calls = []
    apply = fast_ops._FullSoftmaxCE.apply
    monkeypatch.setattr(fast_ops._FullSoftmaxCE, "apply", lambda *a: calls.append(1) or apply(*a))
    with autocast("bf16", "cpu"):
        loss = full_softmax_ce(h, weight, targets, offset=1, num=N)
    grad_h, grad_w = torch.autograd.grad(loss, (h, weight))
    h32 = h.detach().float().requires_grad_()                  # the reference: fp32 logits
    ref = F.cross_entropy(h32 @ weight[1:N + 1].T, targets)
    ref_h, ref_w = torch.autograd.grad(ref, (h32, weight))
    # The chunked kernel ran (the bf16 h was cast to fp32, not sent to the plain path).
    assert calls == [1] and loss.dtype == torch.float32
    # The loss equals F.cross_entropy of the fp32 logits to bf16 tolerance.
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-2, atol=1e-2)
    # Gradients reach h (in h's dtype, through the cast) and the fp32 weight.
    assert grad_h.dtype == torch.bfloat16 and grad_w.dtype == torch.float32
    # Both match the fp32 reference gradients to bf16 tolerance.
    torch.testing.assert_close(grad_h.float(), ref_h, rtol=2e-2, atol=2e-3)
    torch.testing.assert_close(grad_w, ref_w, rtol=2e-2, atol=2e-3)


def test_fast_dropout_keeps_dtype_and_cpu_draws():
    drop = FastDropout(0.5).train()
    x = torch.ones(4, 8)
    torch.manual_seed(0)
    FastDropout.draw_bank(0.5, x.device)
    state = torch.get_rng_state()
    out = drop(x)
    torch.set_rng_state(state)
    offset = int(torch.randint(0, FastDropout._banks[(0.5, "cpu")].numel() - x.numel() + 1, (1,)))
    # The window offset is the draw torch.randint makes without a device (CPU numbers unchanged).
    assert torch.equal(out, FastDropout._banks[(0.5, "cpu")][offset:offset + 32].view(4, 8))
    # A bf16 input gives a bf16 output (a cast of the same bank), as nn.Dropout would.
    torch.set_rng_state(state)
    out16 = drop(x.to(torch.bfloat16))
    assert out16.dtype == torch.bfloat16 and torch.equal(out16.float(), out)
