"""Slides to patches: opening slides with their resolution, tissue, tiles, manifests, annotations, patch datasets, stain normalisation and sample data (notebook 01)."""
