"""Reports of finished runs and studies: tables, comparisons (paired t-tests), figures and run
histories, from the files runs and studies leave (pandas, matplotlib, scipy; never Ray or
Optuna, so a report works on a machine without the search installed).

Modules: results (a study's trial/epoch/seed tables, export), tables (Table 3/4, comparisons,
sensitivity figures), runs (plain ``ec4srec train`` runs: Table 3 layout, ablation, run list),
run_figures (their validation curves), command (``ec4srec report`` / ``tune/report.py``).
"""
