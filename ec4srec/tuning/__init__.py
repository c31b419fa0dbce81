"""Distributed hyperparameter search with Ray Tune + Optuna (docs/search.md).

Modules: space (define-by-run search space), trainable (the Ray trial), warmstart (shared
warm-up checkpoints), study (Tuners, seeds re-runs), results (tables), report (paper tables).
Importing this package imports nothing heavy; ``trainable`` and ``study`` import Ray.
"""
