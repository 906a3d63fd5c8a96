"""Shared machinery of every stage: threads and devices, progress, the parallel map, atomic writes, records, the notebook runner and the CLI."""
