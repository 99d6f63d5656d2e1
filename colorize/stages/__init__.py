"""One thin `main` per DVC stage, run as `python -m colorize.stages.<stage>` (see dvc.yaml)."""
