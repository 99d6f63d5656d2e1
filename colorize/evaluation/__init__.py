"""Evaluation: metrics, the trivial baselines, the per-image evaluation and the HTML report."""
