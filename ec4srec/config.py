"""Typed configuration: one dataclass per component, YAML round-trip, dotted overrides.

Contract:
- Every section has defaults; ``Config()`` is a valid SASRec run on Beauty.
- Unknown keys are rejected with the closest valid name; values are type-checked and
  range-checked. Every failure raises :class:`ConfigError` naming the dotted key.
- ``Config.to_dict()`` -> ``Config.from_dict()`` is the identity, so the ``config.yaml`` a run
  writes is loadable again with ``ec4srec train --config``.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .configs import PAPER_PREFIX, paper_config_path
from .errors import ConfigError
from .paths import recorded_path
from .registry import BACKBONE_NAMES, METHOD_NAMES, METHODS as METHOD_SPECS, explainer_problem, is_guided
from .schedule import update_epochs
from .typed import build_dataclass, load_yaml, suggest, yaml_problem

BACKBONES = BACKBONE_NAMES
METHODS = METHOD_NAMES
EXPLAINERS = ("occlusion", "saliency", "integrated_gradients", "attention")
AUGMENTATIONS = ("crop", "mask", "reorder")
EXPLAIN_TARGETS = ("predicted", "predicted_unseen", "target")   # method.explain_target
PRECISIONS = ("auto", "fp32", "bf16")    # train.precision; resolved per device in precision.py
MAX_INT = 2**31 - 1                      # bound of every count and size key
MAX_SEED = 2**32 - 1                     # numpy and torch seeds
SYNTHETIC_SPLITS = ("prefixes", "paper")  # data.synthetic_split (data/synthetic.py)
OBJECTIVES = ("prefix_rows", "all_positions")  # train.objective (methods/objective.py)
REC_LOSSES = ("full_softmax", "sampled_softmax")  # train.loss
SAMPLERS = ("uniform", "popularity")     # train.negative_sampler
PROTOCOLS = ("all", "unseen")            # evaluation protocols (evaluate.py); train.select_protocol


@dataclass
class DataConfig:
    dataset: str = "beauty"          # beauty | sports | clothing | ml-1m | synthetic | a file path
    data_dir: str | None = None      # else $EC4SREC_DATA_DIR, else the per-user cache dir
    max_len: int = 50                # histories keep their last max_len items
    short_users: str = "skip"        # users with < 3 items: "skip" (counted) or "error"
    synthetic_seed: int = 0          # seed of the Section 3.3 generator (dataset=synthetic)
    synthetic_split: str = "prefixes"  # prefixes: leave-one-out, every prefix a training row |
                                     # paper: Sec. 3.3, one training row per user (dataset=synthetic)

    def validate(self) -> None:
        _check(1 <= self.max_len <= MAX_INT, "data.max_len", f"must be in [1, {MAX_INT}]")
        _check(0 <= self.synthetic_seed <= MAX_SEED, "data.synthetic_seed", f"must be in [0, {MAX_SEED}]")
        _check(self.short_users in ("skip", "error"), "data.short_users", "must be 'skip' or 'error'")
        _check(self.synthetic_split in SYNTHETIC_SPLITS, "data.synthetic_split",
               f"must be one of {SYNTHETIC_SPLITS}")
        _check(self.synthetic_split == "prefixes" or self.dataset == "synthetic",
               "data.synthetic_split", f"{self.synthetic_split!r} needs data.dataset=synthetic "
               f"(got {self.dataset!r})")


@dataclass
class ModelConfig:
    backbone: str = "sasrec"
    hidden_size: int = 64
    dropout: float = 0.5             # SASRec hidden and embedding dropout
    # SASRec
    num_layers: int = 2
    num_heads: int = 2
    inner_size: int = 256
    attn_dropout: float = 0.5
    init_std: float = 0.02
    fast_dropout: bool = True        # bank-window dropout masks (models/base.py)
    # GRU4Rec
    gru_hidden_size: int = 128
    gru_layers: int = 1              # stacked GRU layers (RecBole's num_layers; 1 = the paper's)
    gru_dropout: float = 0.3
    # Caser
    caser_window: int = 5            # L: the last L items form Caser's "image"
    caser_nv: int = 8
    caser_nh: int = 16
    caser_dropout: float = 0.4
    # Options of the strongest published SASRec (RecTools / eSASRec; docs/models.md). The
    # defaults are the RecBole/upstream model every committed run used.
    item_dropout: float = 0.0        # dropout on item embeddings wherever read (input and output)
    tied_output: bool = True         # False: a separate output item table (every backbone)
    norm: str = "post"               # SASRec blocks: post (RecBole) | pre (RecTools, final LN)
    positions: str = "from_start"    # SASRec positions: from_start | from_end (RecTools)
    ffn_activation: str = "gelu"     # SASRec FFN: gelu (RecBole) | relu (SASRec paper, RecTools)
    init: str = "normal"             # normal: N(0, init_std) (RecBole) | xavier_normal (RecTools)

    def validate(self) -> None:
        _check(self.backbone in BACKBONES, "model.backbone", f"must be one of {BACKBONES}")
        for key in ("hidden_size", "num_layers", "num_heads", "inner_size", "gru_hidden_size",
                    "gru_layers"):
            _check(1 <= getattr(self, key) <= MAX_INT, f"model.{key}", f"must be in [1, {MAX_INT}]")
        _check(self.hidden_size % self.num_heads == 0, "model.num_heads",
               "must divide model.hidden_size")
        _check(math.isfinite(self.init_std) and self.init_std > 0, "model.init_std",
               "must be a finite number > 0")
        for key in ("caser_nv", "caser_nh"):
            _check(0 <= getattr(self, key) <= MAX_INT, f"model.{key}", f"must be in [0, {MAX_INT}]")
        _check(self.caser_nv + self.caser_nh >= 1, "model.caser_nv",
               "model.caser_nv and model.caser_nh cannot both be 0 (Caser would have no filters)")
        _check(self.norm in ("post", "pre"), "model.norm", "must be 'post' or 'pre'")
        _check(self.positions in ("from_start", "from_end"), "model.positions",
               "must be 'from_start' or 'from_end'")
        _check(self.ffn_activation in ("gelu", "relu"), "model.ffn_activation", "must be 'gelu' or 'relu'")
        _check(self.init in ("normal", "xavier_normal"), "model.init", "must be 'normal' or 'xavier_normal'")
        for key in ("dropout", "attn_dropout", "gru_dropout", "caser_dropout", "item_dropout"):
            _check(0.0 <= getattr(self, key) < 1.0, f"model.{key}", "must be in [0, 1)")
        _check(self.caser_window >= 1, "model.caser_window", "must be >= 1")


@dataclass
class MethodConfig:
    name: str = "sasrec"
    # Ours, from measurement (docs/methods.md): cosine at tau 0.2 learns at SASRec's pace per
    # epoch; the paper's/upstream's regime is similarity=dot, tau=1.0 (configs/paper/*.yaml).
    tau: float = 0.2                 # temperature of every contrastive term
    similarity: str = "cosine"       # cosine | dot (raw dot product, upstream)
    lambda_cl: float = 0.1           # CL4SRec's lambda and the EC4SRec warm-up phase's
    lambda_sl: float = 0.1           # DuoRec's lambda and the EC4SRec warm-up phase's
    lambda_cl_pos: float = 0.1       # EC4SRec lambda_cl+
    lambda_cl_neg: float = 0.1       # EC4SRec lambda_cl-
    lambda_sl_pos: float = 0.1       # EC4SRec lambda_sl+
    # random augmentations (CL4SRec)
    augmentations: list[str] = field(default_factory=lambda: list(AUGMENTATIONS))
    crop_ratio: float = 0.6          # eta_c: share of the sequence KEPT by crop (DuoRec code)
    mask_ratio: float = 0.3          # gamma: share of items masked
    reorder_ratio: float = 0.6       # beta: share of items in the shuffled window
    # explanation guidance
    mu_e: float = 0.5                # share of a sequence's items that are "important"
    k_rounding: str = "floor"        # floor (paper) | ceil: k = round(mu_e * |s|)
    k_counts: str = "unimportant"    # k = floor(mu_e*|s|) counts the lowest-scored items (paper
                                     # Sec. 4.3) | "important": mu_e = share of top items (upstream)
    ssl_weighting: str = "flat"      # flat: l_cl+ L_cl+ + l_cl- L_cl- (Eq. 9) | nested (Eq. 6)
    retrieval_candidates: int = 64   # ertrl+: util() over at most this many same-target rows
    updates: int = 5                 # p: importance updates over the epoch budget
    update_epochs: list[int] | None = None   # explicit epochs (upstream used [15, 30])
    explainer: str = "occlusion"
    explain_target: str = "predicted"    # predicted (paper's y_u) | predicted_unseen (the top
                                     # item outside the history) | target (ground truth)
    ig_steps: int = 5                # integrated-gradients steps (5 vs 20: BENCHMARKS.md)
    explain_batch_size: int = 1024
    neg_loss: str = "paper"          # paper (Eq. L_cl-) | upstream (SupCon, tau_neg)
    neg_tau: float = 0.1             # temperature of the upstream-style negative loss
    neg_min_length: int = 2          # rows shorter than this are left out of L_cl- (a length-1
                                     # row's negative view is degenerate); 1 = every row (upstream)
    occlusion_sign: str = "abs"      # abs: |y - y_occluded| | positive: max(y - y_occluded, 0)
                                     # (upstream's captum attribution, clamped)
    sl_anchor: str = "rec"           # L_sl / L_sl+ anchor: rec = the L_rec forward | dropout = a
                                     # second, dropout-only encoding of the anchor (DuoRec's us_x)
    warmup_loss: str = "paper"       # paper: L_rec + CL + SL before the first update | rec_only

    def guided_weights(self) -> dict[str, float]:
        """The weight of each explanation-guided term after the first update (Eqs. 6, 7, 9):
        {"cl+": w, "cl-": w, "sl+": w}, 0 for a term the method does not have. With
        ``ssl_weighting=nested`` (Eq. 6 as printed) L_cl- is weighted lambda_cl+ * lambda_cl-."""
        terms = METHOD_SPECS[self.name].guided_terms if self.name in METHOD_SPECS else ()
        w_neg = self.lambda_cl_neg * (self.lambda_cl_pos if self.ssl_weighting == "nested" else 1.0)
        return {"cl+": self.lambda_cl_pos if "cl+" in terms else 0.0, "cl-": w_neg if "cl-" in terms else 0.0,
                "sl+": self.lambda_sl_pos if "sl+" in terms else 0.0}

    def guided_terms(self) -> tuple[str, ...]:
        """The guided terms with a non-zero weight, in the order cl+, cl-, sl+ (empty for the
        unguided methods). Zeroing lambdas of ``ec4srec`` gives the paper's Figure 5 ablation."""
        return tuple(t for t, w in self.guided_weights().items() if w > 0)

    def validate(self) -> None:
        _check(self.name in METHODS, "method.name", f"must be one of {METHODS}")
        _check(self.tau > 0, "method.tau", "must be > 0")
        _check(self.neg_tau > 0, "method.neg_tau", "must be > 0")
        _check(self.similarity in ("dot", "cosine"), "method.similarity", "must be 'dot' or 'cosine'")
        _check(len(self.augmentations) >= 2 and set(self.augmentations) <= set(AUGMENTATIONS)
               and len(set(self.augmentations)) == len(self.augmentations),
               "method.augmentations", f"must be >= 2 distinct names from {AUGMENTATIONS}")
        for key in ("crop_ratio", "mu_e"):
            _check(0.0 < getattr(self, key) <= 1.0, f"method.{key}", "must be in (0, 1]")
        for key in ("mask_ratio", "reorder_ratio"):
            _check(0.0 <= getattr(self, key) <= 1.0, f"method.{key}", "must be in [0, 1]")
        for key in ("lambda_cl", "lambda_sl", "lambda_cl_pos", "lambda_cl_neg", "lambda_sl_pos"):
            _check(getattr(self, key) >= 0.0, f"method.{key}", "must be >= 0")
        _check(self.k_rounding in ("floor", "ceil"), "method.k_rounding", "must be 'floor' or 'ceil'")
        _check(self.k_counts in ("unimportant", "important"), "method.k_counts",
               "must be 'unimportant' or 'important'")
        _check(self.ssl_weighting in ("flat", "nested"), "method.ssl_weighting",
               "must be 'flat' or 'nested'")
        _check(self.retrieval_candidates >= 1, "method.retrieval_candidates", "must be >= 1")
        _check(self.updates >= 1, "method.updates", "must be >= 1")
        _check(self.explainer in EXPLAINERS, "method.explainer", f"must be one of {EXPLAINERS}")
        _check(self.explain_target in EXPLAIN_TARGETS, "method.explain_target",
               f"must be one of {EXPLAIN_TARGETS}")
        _check(self.ig_steps >= 1, "method.ig_steps", "must be >= 1")
        _check(self.explain_batch_size >= 1, "method.explain_batch_size", "must be >= 1")
        _check(self.neg_loss in ("paper", "upstream"), "method.neg_loss", "must be 'paper' or 'upstream'")
        _check(self.neg_min_length >= 1, "method.neg_min_length", "must be >= 1")
        _check(self.occlusion_sign in ("abs", "positive"), "method.occlusion_sign",
               "must be 'abs' or 'positive'")
        _check(self.sl_anchor in ("rec", "dropout"), "method.sl_anchor", "must be 'rec' or 'dropout'")
        _check(self.warmup_loss in ("paper", "rec_only"), "method.warmup_loss",
               "must be 'paper' or 'rec_only'")
        if self.update_epochs is not None:
            _check(all(e >= 1 for e in self.update_epochs), "method.update_epochs", "must be >= 1")


@dataclass
class TrainConfig:
    epochs: int = 200                # N: the epoch budget (also sets the update schedule)
    batch_size: int = 256
    eval_batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10               # early stopping on validation NDCG@10
    min_epochs: int = 0              # never stop before this epoch
    seed: int = 2020
    device: str = "auto"             # auto | cpu | cuda | cuda:N
    precision: str = "auto"          # auto (precision.py: fp32 on CPU, bf16 on CUDA) | fp32 | bf16
    threads: int = 0                 # torch intra-op threads; 0 = all cores
    bucket_batches: int = 64         # length-bucketing window, in batches (1 = no bucketing)
    mask_history: bool = False       # exclude history items from the ranking (paper: off)
    tensorboard: bool = True
    progress: str = "auto"           # auto (on for a terminal) | on | off
    checkpoint_every: int = 1        # epochs between checkpoints (plus every update epoch)
    checkpoint_minutes: float = 5.0  # also mid-epoch, every this many minutes (0: only on Ctrl-C)
    # The next-item objective (methods/objective.py, docs/methods.md)
    objective: str = "prefix_rows"   # prefix_rows: one row per (history, next item), the paper's |
                                     # all_positions: a user sequence per row, every position
                                     # predicts its next item (one encoder pass per user)
    loss: str = "full_softmax"       # full_softmax (Eq. 2) | sampled_softmax
    negatives: int = 256             # sampled_softmax: negatives per target
    shared_negatives: bool = True    # sampled_softmax: one set of n negatives for the whole batch
                                     # (False: n per target, as RecTools; ~20x slower step)
    negative_sampler: str = "uniform"  # uniform | popularity (training-target counts)
    logq_correction: bool = False    # subtract log(n q(item)) from every sampled-softmax logit
    seen_negatives: bool = False     # sampled_softmax: the items the user already saw are
                                     # negatives of every later target too
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    select_protocol: str = "all"     # which protocol's validation NDCG@10 selects and stops:
                                     # all (the paper's) | unseen (history removed; evaluate.py)

    def validate(self) -> None:
        lows = {"epochs": 1, "batch_size": 1, "eval_batch_size": 1, "checkpoint_every": 1,
                "bucket_batches": 1, "patience": 1, "threads": 0, "min_epochs": -MAX_INT,
                "negatives": 1}
        for key, low in lows.items():
            _check(low <= getattr(self, key) <= MAX_INT, f"train.{key}",
                   f"must be >= {low}" if getattr(self, key) < low else f"must be <= {MAX_INT}")
        _check(math.isfinite(self.lr) and self.lr > 0, "train.lr", "must be a finite number > 0")
        _check(math.isfinite(self.weight_decay) and self.weight_decay >= 0, "train.weight_decay",
               "must be a finite number >= 0")
        _check(math.isfinite(self.checkpoint_minutes) and self.checkpoint_minutes >= 0,
               "train.checkpoint_minutes", "must be a finite number >= 0 (0: only on Ctrl-C)")
        _check(0 <= self.seed <= MAX_SEED, "train.seed", f"must be in [0, {MAX_SEED}]")
        _check(self.progress in ("auto", "on", "off"), "train.progress", "must be auto, on or off")
        _check(re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", self.device) is not None,
               "train.device", "must be auto, cpu, cuda or cuda:N")
        _check(self.precision in PRECISIONS, "train.precision", "must be auto, fp32 or bf16")
        for key, allowed in (("objective", OBJECTIVES), ("loss", REC_LOSSES),
                             ("negative_sampler", SAMPLERS), ("select_protocol", PROTOCOLS)):
            _check(getattr(self, key) in allowed, f"train.{key}", f"must be one of {allowed}")
        for key in ("adam_beta1", "adam_beta2"):
            _check(0.0 <= getattr(self, key) < 1.0, f"train.{key}", "must be in [0, 1)")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "Config":
        for section in (self.data, self.model, self.method, self.train):
            section.validate()
        if is_guided(self.method.name):
            try:
                update_epochs(self.train.epochs, self.method.updates, self.method.update_epochs)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if self.model.backbone == "caser" and self.model.caser_window > self.data.max_len:
            raise ConfigError(f"model.caser_window={self.model.caser_window} exceeds data.max_len="
                              f"{self.data.max_len} (the window is taken from the history)")
        problem = explainer_problem(self.method.name, self.method.explainer, self.model.backbone)
        if problem:
            raise ConfigError(problem)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> "Config":
        return build_dataclass(cls, raw or {}, prefix="").validate()

    def with_overrides(self, assignments: list[str]) -> "Config":
        """Apply ``section.key=value`` strings (values parsed as YAML scalars/lists)."""
        raw = self.to_dict()
        for item in assignments:
            key, sep, text = item.partition("=")
            key = key.strip()
            if not sep or "." not in key:
                raise ConfigError(f"override {item!r}: expected section.key=value")
            section, _, name = key.partition(".")
            if section not in raw:
                raise ConfigError(f"unknown config section {section!r}{suggest(section, raw)}")
            if name not in raw[section]:
                raise ConfigError(f"unknown config key {key!r}{suggest(name, raw[section], section + '.')}")
            try:
                value = load_yaml(text) if text.strip() else None
            except yaml.YAMLError as exc:
                raise ConfigError(f"{key}: cannot parse value {text!r}: {yaml_problem(exc)}") from None
            # A string field takes the text as typed: YAML 1.1 would turn e.g. ``off`` into False.
            if isinstance(value, bool) and _is_str_field(section, name):
                value = text.strip()
            raw[section][name] = value
        return Config.from_dict(raw)


def load_config(path: str | Path) -> Config:
    """Read a YAML config file, or ``paper:NAME``: a config shipped in ec4srec/configs/paper
    (ec4srec.configs; an unknown NAME is a ConfigError listing the names). Errors name the file."""
    if isinstance(path, str) and path.startswith(PAPER_PREFIX):
        source, label = paper_config_path(path[len(PAPER_PREFIX):]), path
    else:
        source = label = Path(path)
    try:
        raw = load_yaml(source.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{label}: config file not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{label}: not a text (UTF-8) file") from None
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: not valid YAML: {yaml_problem(exc)}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{label}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Config.from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}") from None


def dump_config(config: Config) -> str:
    """The YAML a run, a study's best config or a warm-up cache records. The data directory and
    a dataset given as a path are written portably (``$EC4SREC_DATA_DIR/...``, ``~/...``; see
    ``paths.recorded_path``); ``data.sources.resolve`` expands them back."""
    raw = config.to_dict()
    data = raw["data"]
    data["data_dir"] = recorded_path(data["data_dir"], expandable=True)
    if os.path.isabs(str(data["dataset"])):
        data["dataset"] = recorded_path(data["dataset"], expandable=True)
    return yaml.safe_dump(raw, sort_keys=False)


def field_type(key: str) -> Any:
    """The declared type of dotted config key ``key`` (``model.num_layers`` -> int), with
    ``| None`` dropped (``data.data_dir`` -> str)."""
    section, _, name = key.partition(".")
    hint = typing.get_type_hints(typing.get_type_hints(Config)[section])[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if len(args) == 1 and type(None) in typing.get_args(hint) else hint


# --------------------------------------------------------------------------- helpers
def _is_str_field(section: str, name: str) -> bool:
    return field_type(f"{section}.{name}") is str


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key} {message}")
