"""Distributed hyperparameter search with Ray Tune + Optuna (docs/search.md).

Modules: options (a study's options and manifest), ranges (space files), space (the
define-by-run search space), budget and cost (the time budget and its cost model), trainable
(the Ray trial), warmcache (shared warm-up checkpoints), watch (searcher, stopper, progress
lines), tuner (one run's Tuner), runs (a run's Tuner to completion; concurrent runs), study
(the driver: runs, seed re-runs, tables), summary,
compat (every use of Ray's and Optuna's private internals), command (``ec4srec search`` /
``tune/search.py``), paper_study (``ec4srec paper-study``) and paper_estimate (its GPU-hour
estimate from measured costs). Importing this package imports
nothing heavy; ``compat``, ``watch``, ``tuner``, ``trainable``, ``runs`` and ``study`` import Ray.
"""
