"""Inference without Lightning or Hydra: checkpoints, users' images, preprocessing, `DigitPredictor`, export."""
