"""Training: the LightningModule, its callbacks, the Trainer's assembly, and a run's start and end."""
