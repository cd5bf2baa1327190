"""`sftrl study`: the paper's comparison (Chu et al. 2025, sec. 5) as one resumable command.

One SFT init, then per seed an SFT arm and an RL arm from its byte-identical weights, each
evaluated at K points on held-out tasks of every variant, on one compute axis (cluster/compute.py);
then `summary.csv`, `report.md` and `plots/study.png` with binomial standard errors per point and
95% intervals across seeds (design.md, "The study").

- config.py: the study file (plan + the runs' config trees) -> one `TrainConfig` per run
- runner.py: runs the init and the arms on one Ray cluster, skipping finished runs, resuming killed ones
- stats.py: binomial standard errors and Student-t intervals
- report.py: summary.csv, report.md and TensorBoard scalars, from the run directories alone
- figures.py: the PNG shaped like the paper's Fig. 5/6
- __main__.py: `python -m cluster.study` (what `sftrl study` and `ray job submit` run)
"""
