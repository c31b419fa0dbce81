"""The method registry: one typed spec per training method, and the explainer/backbone rule.

The bottom of the package (it imports nothing of ec4srec): config validation, the CLI's
choices, the search space, warm-up sharing, the budget's cost prior and the report read the
methods' rules here and nowhere else.

Contracts:
- :data:`METHODS` maps each method name to its :class:`MethodSpec`, in the paper's order
  (baselines first); ``tuple(METHODS)`` is the list of valid ``method.name`` values.
- ``terms`` are the loss terms a method trains with before its first importance update (the
  whole run for an unguided method), ``guided_terms`` the terms that replace its contrastive
  ones after it; term names are ``rec``, ``cl``, ``sl``, ``cl+``, ``cl-``, ``sl+``
  (:data:`TERMS`). A method is guided (explanation-guided: it computes importance scores and
  updates them on a schedule) exactly when it has guided terms.
- :func:`explainer_problem` is the one rule on (method, explainer, backbone): an unguided
  method explains nothing and takes any backbone it lists; a guided one takes an explainer
  only on the backbones :data:`EXPLAINER_BACKBONES` allows it (attention needs SASRec's
  attention weights).
- ``cost``: an epoch's cost relative to SASRec's (the budget's prior for a run not measured
  yet; measured on the converged Beauty runs, SASRec backbone, 1 thread, results/beauty-ours:
  43, 81, 104, 146, 153 s per epoch; EC4SRec(SSL) encodes one view fewer than EC4SRec after
  the first update and as many before it).
"""
from __future__ import annotations

from dataclasses import dataclass

TERMS = ("rec", "cl", "sl", "cl+", "cl-", "sl+")
BACKBONE_NAMES = ("sasrec", "gru4rec", "caser")
BACKBONE_LABELS = {"sasrec": "SASRec", "gru4rec": "GRU4Rec", "caser": "Caser"}
# explainer -> the backbones it can explain (an explainer not listed explains every backbone)
EXPLAINER_BACKBONES = {"attention": ("sasrec",)}


@dataclass(frozen=True)
class MethodSpec:
    """One training method; see the module docstring."""

    name: str
    label: str                            # its name in tables and figures
    terms: tuple[str, ...]                # loss terms before the first update (all of an unguided run)
    guided_terms: tuple[str, ...] = ()    # the terms after the first importance update
    cost: float = 1.0                     # epoch cost relative to SASRec's (budget prior)
    backbones: tuple[str, ...] = BACKBONE_NAMES

    @property
    def guided(self) -> bool:
        return bool(self.guided_terms)


_WARMUP = ("rec", "cl", "sl")     # Sec. 4.1: the guided variants warm up on CL4SRec + DuoRec
METHODS: dict[str, MethodSpec] = {s.name: s for s in (
    MethodSpec("sasrec", "SASRec", ("rec",)),
    MethodSpec("cl4srec", "CL4SRec", ("rec", "cl"), cost=1.9),
    MethodSpec("duorec", "DuoRec", ("rec", "sl"), cost=2.4),
    MethodSpec("ec4srec_ssl", "EC4SRec(SSL)", _WARMUP, ("rec", "cl+", "cl-"), cost=3.4),
    MethodSpec("ec4srec_sl", "EC4SRec(SL)", _WARMUP, ("rec", "sl+"), cost=3.4),
    MethodSpec("ec4srec", "EC4SRec", _WARMUP, ("rec", "cl+", "cl-", "sl+"), cost=3.6),
)}
METHOD_NAMES = tuple(METHODS)
# the plain next-item method (L_rec alone, on any backbone): stage 1 of a staged study
PLAIN = next(name for name, spec in METHODS.items() if spec.terms == ("rec",))
GUIDED = tuple(name for name, spec in METHODS.items() if spec.guided)
LABELS = {**{name: spec.label for name, spec in METHODS.items()}, **BACKBONE_LABELS}


def is_guided(method: str) -> bool:
    """Whether ``method`` is explanation-guided (False for an unknown name)."""
    spec = METHODS.get(method)
    return spec is not None and spec.guided


def warmup_baselines(method: str) -> tuple[str, ...]:
    """The unguided methods whose contrastive terms make up guided ``method``'s warm-up loss
    (CL4SRec and DuoRec for the EC4SRec variants; empty for an unguided method)."""
    spec = METHODS[method]
    if not spec.guided:
        return ()
    return tuple(name for name, other in METHODS.items() if not other.guided
                 and len(other.terms) > 1 and set(other.terms) <= set(spec.terms))


def explainer_backbones(explainer: str) -> tuple[str, ...] | None:
    """The backbones ``explainer`` can explain; None: every backbone."""
    return EXPLAINER_BACKBONES.get(explainer)


def explainer_fits(explainer: str, backbone: str) -> bool:
    """Whether ``explainer`` can explain a ``backbone`` model."""
    allowed = explainer_backbones(explainer)
    return allowed is None or backbone in allowed


def explainer_problem(method: str, explainer: str, backbone: str) -> str | None:
    """Why ``method`` cannot train with ``explainer`` on ``backbone``, or None when it can
    (an unguided method never explains, so only its backbone counts)."""
    spec = METHODS[method]
    if backbone not in spec.backbones:
        return f"method {method} does not run on backbone {backbone}"
    if spec.guided and not explainer_fits(explainer, backbone):
        return (f"method.explainer={explainer} needs model.backbone="
                f"{'|'.join(explainer_backbones(explainer))} ({backbone} has no {explainer} weights)")
    return None
