"""Numeric kernels of the hot path that compute exactly what the plain PyTorch code computes,
only with less memory traffic.

:func:`full_softmax_ce` is the full-softmax cross-entropy
``F.cross_entropy(h @ W[offset:offset + N].T, targets)`` (mean over the batch) as one autograd
function. Plain PyTorch materialises the ``[B, N]`` logits, a ``[B, N]`` log-softmax kept for
backward and a ``[B, N]`` gradient, and (for a sliced weight) a dense zero-filled copy of the
weight gradient. Here the batch is processed in row chunks whose ``[chunk, N]`` logits stay in
cache; the gradient ``softmax - onehot`` of each chunk is formed in place right after its
forward, and the two gradient matmuls (``G @ W`` and ``G^T @ h``) run at once, so nothing of
size ``[B, N]`` is stored for backward and the logits are never recomputed. Backward only scales
the stored ``[B, d]`` and ``[rows, d]`` gradients by the incoming scalar.

The gradients are therefore computed during forward whenever grad mode is on and an input
requires grad; that costs the same as a backward that is always run (a training loss), and
double backward is not supported. The kernel is CPU fp32 only; see :func:`full_softmax_ce` for
bf16 inputs and CUDA.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

DEFAULT_CHUNK = 64
_HALF = (torch.bfloat16, torch.float16)


class _FullSoftmaxCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, targets, offset, num, chunk):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        B = h.shape[0]
        W = weight[offset:offset + num]                                    # [N, d] view
        losses = h.new_empty(B)
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = None
        if need_w:
            grad_w = torch.zeros_like(weight)                              # full table rows
            gw = grad_w[offset:offset + num]
        rows = torch.arange(B, device=h.device)
        for start in range(0, B, chunk):
            stop = min(start + chunk, B)
            hc, tc, rc = h[start:stop], targets[start:stop], rows[:stop - start]
            logits = hc @ W.T                                              # [c, N]
            target_logit = logits[rc, tc]
            top = logits.amax(dim=1, keepdim=True)
            p = logits.sub_(top).exp_()                                    # unnormalised
            total = p.sum(dim=1, keepdim=True)
            losses[start:stop] = (top + total.log()).squeeze(1) - target_logit   # lse - l_t
            if need_h or need_w:
                g = p.mul_(total.reciprocal_().mul_(1.0 / B))              # softmax / B
                g[rc, tc] -= 1.0 / B                                       # - onehot / B
                if need_h:
                    torch.mm(g, W, out=grad_h[start:stop])
                if need_w:
                    gw.addmm_(g.T, hc)
        ctx.save_for_backward(grad_h, grad_w)
        return losses.mean()

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        if grad_h is not None:
            grad_h = grad_h * grad_out
        if grad_w is not None:
            grad_w = grad_w * grad_out
        return grad_h, grad_w, None, None, None, None


def full_softmax_ce(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                    offset: int = 0, num: int | None = None,
                    chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Mean cross-entropy of ``targets`` (0-based class ids) against logits
    ``h @ weight[offset:offset + num].T``; equal to ``F.cross_entropy`` of those logits.

    h: [B, d] float; weight: [R, d] (e.g. a whole embedding table, of which rows
    ``offset .. offset + num - 1`` are the classes); targets: [B] int64 in ``[0, num)``.

    CPU: always computed in fp32 with autocast off. A bf16/fp16 ``h`` (the encoder output under
    bf16 autocast) or ``weight`` is cast to fp32 first, so the chunked kernel still runs and the
    gradient reaches ``h`` through the cast, in ``h``'s dtype. Targets are range-checked
    (IndexError). float64 or non-2-D inputs take the plain path below.

    CUDA: the plain ``F.cross_entropy(h @ W.T, targets)``; under autocast the logits are in the
    autocast dtype (cross_entropy itself runs in fp32, autocast's rule). No range check: reading
    ``targets.min()`` back would synchronise with the device every step; an out-of-range target
    trips the kernel's device-side assert instead. Memory, measured with the profiler: the
    backward of the slice ``weight[offset:offset + num]`` (``SliceBackward0`` ->
    ``at::slice_backward``) allocates a zero-filled ``[R, d]`` tensor and copies the ``[N, d]``
    matmul gradient into it. That is not a second table-sized gradient: the table's ``.grad``
    is a dense ``[R, d]`` anyway and AccumulateGrad either adopts this tensor as ``.grad`` or
    adds the embedding lookup's ``[R, d]`` gradient into it in place (exactly as for any
    parameter used twice). The overhead is one ``[N, d]`` temporary (two under autocast: the
    bf16 gradient and its fp32 cast) and an ``R * d`` fill + copy, O(N * d) against the
    O(B * N) logits; nothing of it outlives the backward, so the slice is kept.
    """
    num = weight.shape[0] - offset if num is None else num
    if h.device.type != "cpu":
        return F.cross_entropy(h @ weight[offset:offset + num].T, targets)
    with torch.autocast("cpu", enabled=False):
        h = h.float() if h.dtype in _HALF else h
        weight = weight.float() if weight.dtype in _HALF else weight
        if (h.dtype != torch.float32 or weight.dtype != torch.float32 or h.dim() != 2
                or h.shape[0] == 0):
            return F.cross_entropy(h @ weight[offset:offset + num].T, targets)
        if int(targets.min()) < 0 or int(targets.max()) >= num:
            raise IndexError(f"target out of range [0, {num})")
        return _FullSoftmaxCE.apply(h.contiguous(), weight, targets, offset, num,
                                    max(1, int(chunk)))
