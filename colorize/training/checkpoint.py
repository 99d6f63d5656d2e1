"""Checkpoints: what train.py writes, how it writes them, and the one way to read one.

The keys (torchvision's reference training scripts' names where they apply):
- `model`: the state dict (a zhang model's bins and class weights are buffers in it);
- `optimizer`, `lr_scheduler`: their state dicts (gan adds `critic_optimizer`);
- `epoch`: the last completed epoch;
- `args`: what of the params the model needs: `train` and `ingest.image_size`
  (params.model_args; nothing the train stage does not depend on);
- `rng`: the RNG states, so a resumed run draws what the uninterrupted one would.
The resume file `models/checkpoints/last.pt` adds `fingerprint`, `loss_table`,
`drawn`, `history` and `mlflow_run_id` (see colorize/stages/train.py).

Writing is atomic and durable (colorize/common/files.py): a crash or a full disk never leaves
a half-written checkpoint, the previous one stays whole, and a full disk is one line.

Reading (`load`, `load_model`) treats a checkpoint as untrusted data: only
`torch.load(weights_only=True)` (no code runs), the `args` validated like params.yaml
(bounded work, one-line messages), then every tensor's shape compared with the model
those args describe, built on the meta device (no memory) BEFORE the real model is
built: tampered args (width 1024, depth 6) are a one-line error, not a 4.8 GB
allocation. Every problem is a one-line UserError naming the file.
"""
from __future__ import annotations

import pickle
import re
import sys
from pathlib import Path

import torch
from torch import nn

from colorize.common.errors import UserError, one_line
from colorize.common.files import atomic_write
from colorize.common.params import short, validate_model_args
from colorize.training.models import build_model, checkpoint_priors, needs_priors

FORMAT = 3  # bump when the keys change: resume files of another format are not resumed


# ---------------------------------------------------------------------------- writing

def save(path: Path, state: dict) -> None:
    """Write `state` to `path` atomically and durably: whole, or not at all (the old file kept)."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: a full disk is OSError(ENOSPC), not torch's RuntimeError
            torch.save(_canonical(state), f)

    atomic_write(path, write, durable=True)


def _canonical(obj):
    """`obj` with fresh containers and interned strings, so its bytes depend on its values only.

    Pickle writes a string or tuple met twice as a back-reference to the first, by object
    identity. A resumed run's optimizer keys come from the unpickled checkpoint, an
    uninterrupted run's from torch's own code: equal values, other objects, other bytes.
    So a resumed model.pt differed from an uninterrupted one (and DVC reran what follows)."""
    if isinstance(obj, dict):  # a plain dict: a subclass would be refused by weights_only loading
        return {_canonical(k): _canonical(v) for k, v in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(_canonical(v) for v in obj)
    if type(obj) is str:
        return sys.intern(obj)
    return obj


# ---------------------------------------------------------------------------- reading

def load(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint at `path` as a dict, its `args` replaced by the validated params."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found (train one with: dvc repro train)")
    ckpt = _torch_load(path, map_location)
    args = ckpt.get("args") if isinstance(ckpt, dict) else None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict) or args is None:
        raise UserError(f"{path}: not a checkpoint of colorize/stages/train.py (expected a dict with 'model' and 'args')")
    try:
        ckpt["args"] = validate_model_args(args)  # checked like params.yaml's train and ingest.image_size
    except UserError as e:
        raise UserError(f"{path}: checkpoint params: {e}") from None
    return ckpt


def load_model(path: Path) -> tuple[nn.Module, dict]:
    """(model in eval mode on the CPU, checkpoint) for the checkpoint at `path`."""
    ckpt = load(path)
    model = build(path, ckpt)
    model.eval()
    return model, ckpt


def build(path: Path, ckpt: dict) -> nn.Module:
    """The model `ckpt["args"]` describes, with the checkpoint's weights, once every
    shape in the state dict is known to match it."""
    train_params, state = ckpt["args"]["train"], ckpt["model"]
    check_shapes(path, train_params, state)
    try:
        model = build_model(train_params, checkpoint_priors(state), load_weights=False)  # the checkpoint has them
        model.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 - dtype, bad priors, ...: the file is at fault
        raise UserError(f"{path}: weights do not fit the {train_params['model']} model its params describe "
                        f"({type(e).__name__}: {one_line(str(e), 200)})") from None
    return model


def check_shapes(path: Path, train_params: dict, state: dict) -> None:
    """Every key and shape of `state` against the model the params describe, built on
    the meta device: tensors without storage, so any width and depth cost nothing."""
    if needs_priors(train_params) and checkpoint_priors(state) is None:
        # else build_model would read the priors stage's files, which are not this model's
        raise UserError(f"{path}: a {train_params['model']} checkpoint without its bins and class_weights")
    try:
        with torch.device("meta"):
            skeleton = build_model(train_params, checkpoint_priors(state), load_weights=False)
    except Exception as e:  # noqa: BLE001 - e.g. zhang priors that are not tensors
        raise UserError(f"{path}: cannot describe its {train_params['model']} model "
                        f"({type(e).__name__}: {one_line(str(e), 200)})") from None
    want = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    what = f"{train_params['model']} width {train_params['width']} depth {train_params['depth']}"
    for key in state:
        if key not in want:
            raise UserError(f"{path}: weights do not fit the {what} model its params describe "
                            f"(unexpected {short(key)})")
    for key, shape in want.items():
        if key not in state:
            raise UserError(f"{path}: weights do not fit the {what} model its params describe (missing {key})")
        got = state[key]
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != shape:
            have = tuple(got.shape) if isinstance(got, torch.Tensor) else short(got)
            raise UserError(f"{path}: weights do not fit the {what} model its params describe "
                            f"({key}: {have} in the file, {shape} for the params)")


def _torch_load(path: Path, map_location) -> object:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)  # data, never code
    except pickle.UnpicklingError as e:
        # torch's text also suggests weights_only=False: not advice to pass on. Keep the
        # line that names what was refused, e.g. "unsupported GLOBAL posix.system".
        lines = [ln for ln in str(e).splitlines() if re.search(r"unsupported|GLOBAL|WeightsUnpickler", ln, re.I)]
        why = one_line(lines[0], 200) if lines else "it holds more than tensors and plain containers"
        raise UserError(f"{path}: refused: not a plain weights checkpoint (torch.load weights_only=True: {why})") from None
    except Exception as e:  # noqa: BLE001 - truncated zip, not a torch file, ...
        raise UserError(f"{path}: cannot read it as a torch checkpoint ({type(e).__name__}: {one_line(str(e), 200)})") from None
