"""Evaluating checkpoints: loading, test-time augmentation, per-class tables, plots, Grad-CAM."""
