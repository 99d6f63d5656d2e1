"""Shared I/O and colour code: paths, params, errors, Lab, decoding, shards, grids, MLflow."""
