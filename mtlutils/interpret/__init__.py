"""Interpretability of trained models: activations, concept probes, embeddings, Grad-CAM, slide maps (notebook 05)."""

from mtlutils.interpret import activations, concept_probes, embeddings, gradcam, slide_maps

__all__ = ["activations", "concept_probes", "embeddings", "gradcam", "slide_maps"]
