"""Evaluation: metrics and report files, calibration, robustness, figures, sweep comparison, training logs."""
