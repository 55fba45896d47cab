"""Helpers of tools/demo: the click stream, the models, the metrics (see ctr.py)."""
