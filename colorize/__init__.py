"""colorize: reproducible image-colorization models (DVC pipeline, FiftyOne curation,
MLflow tracking) and the `colorize` command for your own black-and-white photos.

Layout, by role:
- `colorize.stages`: one thin `main` per DVC stage (`python -m colorize.stages.<stage>`);
- `colorize.sources`: where photos come from (garden, folder, Flowers-102, Open Images);
- `colorize.curation`: quality checks, the relevance classifier, people's decisions;
- `colorize.training`: the models, the training engine, checkpoints, the ab priors;
- `colorize.evaluation`: metrics, trivial baselines, the evaluation and its report;
- `colorize.common`: shared I/O and colour code (paths, params, Lab, decoding, shards);
- `colorize.cli`: the `colorize` and `colorize-review` commands.
"""
__version__ = "0.2.0"
