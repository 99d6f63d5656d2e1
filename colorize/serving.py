"""The trained colorizer as an MLflow pyfunc model: registered by evaluate, servable by
`mlflow models serve`.

- Input: a batch of 8-bit sRGB images, uint8 (N, H, W, 3), any height and width (the
  signature says -1); a black-and-white photo is one whose three channels are equal.
  All images of one request share a size (a tensor); send differently sized photos in
  separate requests.
- Output: the colorized images, uint8 (N, H, W, 3), through the very code of the
  `colorize` CLI (`colorize_pixels`): the model sees L at its render size, its ab is
  upsampled and put with each image's own full-resolution L, so the output's L is the
  input's up to 8-bit rounding.
- The model's files: the checkpoint (loaded with weights_only, as everywhere) and the
  `colorize` package as code, so the model loads wherever its pip requirements are met.

    mlflow models serve -m models:/colorizer-unet/1 --env-manager local -h 127.0.0.1 -p 5001
    curl -X POST 127.0.0.1:5001/invocations -H 'Content-Type: application/json' \
         -d '{"inputs": [[[[12, 12, 12], ...]]]}'
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

PACKAGE = Path(__file__).resolve().parent  # shipped with the model as its code


def registered_name(model: str) -> str:
    """The registry's name for a train.model: one registered model per architecture."""
    return f"colorizer-{model}"


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    images = TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))  # unnamed: predict gets the array itself
    return ModelSignature(inputs=Schema([images]), outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))]))


def pip_requirements() -> list[str]:
    """What the model needs to load, pinned to this environment's versions (given, so
    MLflow does not spend seconds inferring them by loading the model in a subprocess)."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("torch", "numpy", "pillow", "pyyaml", "mlflow")]


def python_model():
    """The pyfunc class (made on first use: mlflow is imported only by stages that log)."""
    import mlflow.pyfunc

    class Colorizer(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            from colorize.cli.colorize import load_model, model_factor

            self.model, params = load_model(Path(context.artifacts["checkpoint"]))
            self.factor = model_factor(params["train"])
            self.render = params["ingest"]["image_size"]

        def predict(self, context, model_input, params=None):
            from colorize.cli.colorize import colorize_pixels

            images = np.asarray(model_input)
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
            return np.stack([colorize_pixels(image, self.model, self.render, self.factor)[0] for image in images])

    return Colorizer()


def log_colorizer(mlflow, checkpoint: Path, example: np.ndarray, registered: str | None = None):
    """Log the checkpoint as a pyfunc colorizer in the active run (and register it under
    `registered`); returns MLflow's ModelInfo."""
    return mlflow.pyfunc.log_model(
        name="colorizer",
        python_model=python_model(),
        artifacts={"checkpoint": str(checkpoint)},
        code_paths=[str(PACKAGE)],
        signature=signature(),
        input_example=example,
        pip_requirements=pip_requirements(),
        registered_model_name=registered,
    )
