"""Experiment plans built from the other subpackages: paper A's guided-CNN grid (notebook 03)."""
