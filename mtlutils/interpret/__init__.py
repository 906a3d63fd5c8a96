"""Interpretability of trained models: activations, concept probes, embeddings, Grad-CAM (notebook 05)."""

from mtlutils.interpret import activations, concept_probes, embeddings, gradcam

__all__ = ["activations", "concept_probes", "embeddings", "gradcam"]
