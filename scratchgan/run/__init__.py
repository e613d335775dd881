"""A training run: the trainer and its world (one process, or data-parallel ranks), the run folder and its
manifest, the logs and plots, and the quality metrics measured during training."""
