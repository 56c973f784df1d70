"""MNIST: the IDX files on disk (no Lightning), the Lightning data module, augmentation and corruptions."""
