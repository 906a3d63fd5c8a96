"""Metrics, bootstrap intervals and paired tests, probes and the confounder report, shared by the CNN and the bag models."""
