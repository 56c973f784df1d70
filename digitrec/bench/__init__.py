"""Measurement, each a command that prints a table:

- `python -m digitrec.bench`: training and evaluation throughput per model (`__main__`, with
  `setup`, `training`, `baselines`, `measure` and `report`);
- `python -m digitrec.bench.latency`: the predictor's latency, and `--startup` for whole processes;
- `python -m digitrec.bench.rerender`: accuracy on MNIST digits re-rendered as users give them.

Importing this package imports nothing: `latency` and `rerender` stay free of Lightning and Hydra.
"""
