"""The contrastive objective as data: the views of a batch, the terms that read them, and which
terms each method trains with, with which weights, in each phase (docs/methods.md, "The term
table"). Pure data and small functions over it; the views are built and the terms computed in
contrastive.py.
"""
from __future__ import annotations

from typing import Union

# The views a batch can be encoded in, in the order they are BUILT and POOLED for
# encode_together. The order fixes the numbers: augmentations and retrieval draw from torch's
# global RNG in build order, and the encoders' dropout draws follow the pooled order.
VIEWS = (
    "anchor",          # the batch's rows: L_rec's forward
    "aug1", "aug2",    # two random augmentations (CL4SRec)
    "anchor_sl",       # L_sl / L_sl+'s anchor: the anchor's own encoding (sl_anchor=rec, not a
                       # view of its own) or a second, dropout-only encoding (sl_anchor=dropout)
    "same_target",     # a random same-target training row (rtrl, DuoRec)
    "pos1", "pos2",    # two explanation-guided positive views
    "neg",             # one explanation-guided negative view
    "guided_partner",  # a same-target row drawn by importance (ertrl+)
)

# Each term and the views it reads (a pair term's two views in the order InfoNCE takes them).
TERM_VIEWS: dict[str, tuple[str, ...]] = {
    "rec": ("anchor",),                       # L_rec, Eq. 2
    "cl": ("aug1", "aug2"),                   # L_cl, Eq. 3 (CL4SRec)
    "sl": ("anchor_sl", "same_target"),       # L_sl, Eq. 4 (DuoRec)
    "cl+": ("pos1", "pos2"),                  # L_cl+, Sec. 4.4.1
    "cl-": ("neg", "pos1", "pos2"),           # L_cl-, Sec. 4.4.1: the positive views are its S+
    "sl+": ("anchor_sl", "guided_partner"),   # L_sl+, Eq. 8
}

# A weight is a number or the name of a MethodConfig field. A row is a weighted sum,
# {term: weight}, in which a (weight, row) entry is a parenthesised sub-sum (L_ssl+, "ssl+").
Weight = Union[float, str]
Row = dict[str, Union[Weight, tuple[Weight, "Row"]]]

_WARMUP: Row = {"rec": 1, "cl": "lambda_cl", "sl": "lambda_sl"}      # Sec. 4.1: CL4SRec + DuoRec
_REC: Row = {"rec": 1}                                               # upstream's warm-up
# L_ssl+: Eq. 9's l_cl+ L_cl+ + l_cl- L_cl- (flat), Eq. 6's l_cl+ (L_cl+ + l_cl- L_cl-) (nested)
_SSL_FLAT = (1, {"cl+": "lambda_cl_pos", "cl-": "lambda_cl_neg"})
_SSL_NESTED = ("lambda_cl_pos", {"cl+": 1, "cl-": "lambda_cl_neg"})

# (method, phase) -> the loss. Phases: "train" (the unguided methods have one), "warmup" (before
# the first importance update; "/rec_only" with method.warmup_loss=rec_only) and "guided" (from
# the first update on; "/nested" with method.ssl_weighting=nested). The Figure 5 ablation is a
# guided row of ec4srec with some lambdas 0: a term of weight 0 is dropped with its views.
TABLE: dict[tuple[str, str], Row] = {
    ("cl4srec", "train"): {"rec": 1, "cl": "lambda_cl"},
    ("duorec", "train"): {"rec": 1, "sl": "lambda_sl"},
    ("ec4srec_ssl", "warmup"): _WARMUP,
    ("ec4srec_ssl", "warmup/rec_only"): _REC,
    ("ec4srec_ssl", "guided"): {"rec": 1, "ssl+": _SSL_FLAT},
    ("ec4srec_ssl", "guided/nested"): {"rec": 1, "ssl+": _SSL_NESTED},            # Eq. 6
    ("ec4srec_sl", "warmup"): _WARMUP,
    ("ec4srec_sl", "warmup/rec_only"): _REC,
    ("ec4srec_sl", "guided"): {"rec": 1, "sl+": "lambda_sl_pos"},                 # Eq. 7
    ("ec4srec_sl", "guided/nested"): {"rec": 1, "sl+": "lambda_sl_pos"},
    ("ec4srec", "warmup"): _WARMUP,
    ("ec4srec", "warmup/rec_only"): _REC,
    ("ec4srec", "guided"): {"rec": 1, "ssl+": _SSL_FLAT, "sl+": "lambda_sl_pos"},   # Eq. 9
    ("ec4srec", "guided/nested"): {"rec": 1, "ssl+": _SSL_NESTED, "sl+": "lambda_sl_pos"},
}

METHODS = tuple(dict.fromkeys(method for method, _ in TABLE))
GUIDED = tuple(method for method, phase in TABLE if phase == "guided")


def phase_of(mc, updated: bool) -> str:
    """The phase of method config ``mc``: ``updated`` = importance scores exist (the guided
    methods' first update has run)."""
    if mc.name not in GUIDED:
        return "train"
    if not updated:
        return "warmup" if mc.warmup_loss == "paper" else "warmup/rec_only"
    return "guided/nested" if mc.ssl_weighting == "nested" else "guided"


def weights(mc, phase: str) -> dict[str, tuple[float, dict | None]]:
    """The row of (``mc.name``, ``phase``) with its weights read from ``mc``: {name: (weight,
    sub-sum or None)} in row order, every entry of weight 0 (and every empty sub-sum) dropped."""
    return _resolve(TABLE[(mc.name, phase)], mc)


def _resolve(row: Row, mc) -> dict[str, tuple[float, dict | None]]:
    out = {}
    for name, entry in row.items():
        weight, inner = entry if isinstance(entry, tuple) else (entry, None)
        weight = float(getattr(mc, weight) if isinstance(weight, str) else weight)
        inner = None if inner is None else _resolve(inner, mc)
        if weight != 0 and inner != {}:
            out[name] = (weight, inner)
    return out


def terms_of(resolved: dict[str, tuple[float, dict | None]]) -> tuple[str, ...]:
    """The terms of a resolved row, sub-sums flattened, in row order."""
    return tuple(t for name, (_, inner) in resolved.items()
                 for t in ((name,) if inner is None else terms_of(inner)))


def views_of(terms: tuple[str, ...], sl_anchor: str) -> tuple[str, ...]:
    """The views ``terms`` read, in VIEWS order; always the anchor, and ``anchor_sl`` only when
    it is a view of its own (``sl_anchor=dropout``)."""
    needed = {"anchor", *(v for t in terms for v in TERM_VIEWS[t])}
    if sl_anchor == "rec":
        needed.discard("anchor_sl")
    return tuple(v for v in VIEWS if v in needed)


def weighted_sum(resolved: dict[str, tuple[float, dict | None]], values: dict):
    """sum of weight x term over a resolved row, left to right in row order; a sub-sum is summed
    first and then weighted; a weight of 1 multiplies nothing (the sums of main 12d0a95, bit for
    bit). ``values``: term -> scalar tensor."""
    total = None
    for name, (weight, inner) in resolved.items():
        value = values[name] if inner is None else weighted_sum(inner, values)
        value = value if weight == 1 else weight * value
        total = value if total is None else total + value
    return total
