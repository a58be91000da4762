"""PrefStudio's research side: training the shipped models (train/), the PrefBench harness
(prefbench/), the paper's evaluation protocol and attention analysis (eval/), pair-data
scorers, offline VLM builders and the Pick-a-Pic converter (preference/), and the writer of
docs/benchmarks.md sections (report.py). It imports prefstudio; prefstudio never imports it.
Run from a checkout: it reads and writes data/, checkpoints/ and docs/ there."""
