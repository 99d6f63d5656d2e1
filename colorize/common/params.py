"""Load and validate params.yaml.

Every stage reads params through `load_params()`, which checks the whole file against
SCHEMA: unknown keys, missing keys, wrong types and out-of-range values all end in a
one-line `ParamsError` that names the key. Validating the whole file in every stage is
cheap and means a typo anywhere fails fast instead of surfacing three stages later.
The first DVC stage, `params` (`python -m colorize.common.params`), depends on the whole file,
so any edit, also of a key no stage tracks (a misspelt top-level section), is checked
on the next `dvc repro`.

Params also come from checkpoints, which anyone can make: validation work and messages
are bounded (lists of at most MAX_ITEMS, integers of 64 bits, values shown by a short
repr), so a crafted value costs milliseconds and one short line.

Defaults live in params.yaml (with a comment beside each), not here: the schema says
what is allowed, the file says what is chosen.
"""
from __future__ import annotations

import difflib
import math
import os
import re
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from colorize.common import paths
from colorize.common.errors import UserError

# The names later stages dispatch on. Kept here (not imported from the stage modules)
# so that validating params never imports torch; tests check they match the registries.
SOURCE_NAMES = ("garden", "folder", "flowers102", "openimages")
MODEL_NAMES = ("unet", "zhang", "resnet", "gan", "cnn")
UNET_LOSSES = ("l1", "mse")  # train.unet.loss
UNET_DECODES = ("regression", "bins")  # train.unet.decode


MAX_ITEMS = 10_000  # items in one list: far above any real list, and it bounds the work
MAX_INT_BITS = 63  # integers must fit in int64 (torch, numpy and float() take them)


class ParamsError(UserError):
    """A bad value in params.yaml; the message names the key."""


class _ShortRepr(reprlib.Repr):
    """reprlib's bounded repr, also for huge integers (whose repr Python 3.11 refuses)."""

    def repr_int(self, x, level):
        if x.bit_length() > 128:
            return f"<an integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_SHORT = _ShortRepr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 4, 4, 60, 60


def short(value: Any) -> str:
    """A repr of at most ~100 characters whatever the value. Params can come from a
    checkpoint someone else made: nested lists that share their items (a "billion laughs")
    have a repr of astronomic length, so a full repr in a message would never finish."""
    return _SHORT.repr(value)


@dataclass(frozen=True)
class Int:
    lo: int | None = None
    hi: int | None = None

    def check(self, key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key}: expected an integer, got {short(value)}")
        if value.bit_length() > MAX_INT_BITS:
            raise ParamsError(f"{key}: must fit in 64 bits, got {short(value)}")
        _check_range(key, value, self.lo, self.hi)
        return value


@dataclass(frozen=True)
class Float:
    lo: float | None = None
    hi: float | None = None

    def check(self, key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{key}: expected a number, got {short(value)}")
        if isinstance(value, float) and math.isnan(value):
            raise ParamsError(f"{key}: expected a number, got NaN")
        _check_range(key, value, self.lo, self.hi)
        return float(value)


@dataclass(frozen=True)
class Bool:
    def check(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{key}: expected true or false, got {short(value)}")
        return value


@dataclass(frozen=True)
class Str:
    empty: bool = False  # "" allowed: a value that only some settings need (train.rdzv_endpoint)

    def check(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not (value or self.empty):
            what = "a string" if self.empty else "a non-empty string"
            raise ParamsError(f"{key}: expected {what}, got {short(value)}")
        return value


@dataclass(frozen=True)
class Choice:
    choices: tuple[str, ...]
    what: str = "value"

    def check(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or value not in self.choices:
            close = difflib.get_close_matches(value, self.choices, n=1) if isinstance(value, str) else []
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ParamsError(
                f"{key}: unknown {self.what} {short(value)}{hint}; choose from {', '.join(self.choices)}"
            )
        return value


@dataclass(frozen=True)
class ListOf:
    item: Any
    min_len: int = 1

    def check(self, key: str, value: Any) -> list:
        if not isinstance(value, list):
            raise ParamsError(f"{key}: expected a list, got {short(value)}")
        if len(value) < self.min_len:
            raise ParamsError(f"{key}: expected at least {self.min_len} item(s), got none")
        if len(value) > MAX_ITEMS:
            raise ParamsError(f"{key}: expected at most {MAX_ITEMS} items, got {len(value)}")
        # The items first: they are then plain numbers or strings, cheap to compare.
        items = [self.item.check(f"{key}[{i}]", v) for i, v in enumerate(value)]
        if len(set(items)) != len(items):
            raise ParamsError(f"{key}: items must be unique, got {short(items)}")
        return items


def _check_range(key, value, lo, hi) -> None:
    if lo is not None and value < lo:
        raise ParamsError(f"{key}: must be >= {lo}, got {short(value)}")
    if hi is not None and value > hi:
        raise ParamsError(f"{key}: must be <= {hi}, got {short(value)}")


SCHEMA: dict[str, Any] = {
    "data": {
        "sources": ListOf(Choice(SOURCE_NAMES, "source")),
        "garden": {
            "n_images": Int(1, 1_000_000),
            "seed": Int(0),
            "min_size": Int(16, 4096),
            "max_size": Int(16, 4096),
            "defect_rate": Float(0.0, 1.0),
        },
        "folder": {"path": Str(), "negative_labels": ListOf(Str(), min_len=0)},
        "flowers102": {
            "base_url": Str(),
            "md5": {"images": Str(), "labels": Str(), "setid": Str()},
        },
        "openimages": {
            "version": Choice(("v7", "v6"), "Open Images version"),
            "classes": ListOf(Str()),
            "negative_classes": ListOf(Str(), min_len=0),
            "splits": ListOf(Choice(("train", "validation", "test"), "Open Images split")),
            "max_images": Int(0),
            "max_negatives": Int(0),
            "seed": Int(0),
            "annotations_url": Str(),
            "images_url": Str(),
        },
        "download": {
            "workers": Int(1, 64),
            "connect_timeout": Float(0.1, 600),
            "read_timeout": Float(0.1, 3600),
            "retries": Int(0, 20),
            "backoff": Float(0.0, 60.0),
            "max_extract_bytes": Int(1),
        },
    },
    "ingest": {
        "image_size": Int(16, 1024),
        "max_pixels": Int(1_000_000),
        "shard_size": Int(1, 1_000_000),
    },
    "curate": {
        "min_side": Int(1),
        "gray_chroma": Float(0.0, 100.0),
        "tint": Float(0.0, 10.0),
        "dark": Float(0.0, 100.0),
        "overexposed": Float(0.0, 100.0),
        "blurry": Float(0.0, 100.0),
        "low_information": Float(0.0, 16.0),
        "low_contrast": Float(0.0, 100.0),
        "max_aspect": Float(1.0, 1000.0),
        "near_duplicate": Float(0.0, 1.0),
        "near_duplicate_colour": Float(0.0, 200.0),
    },
    "relevance": {
        "width": Int(1, 512),
        "epochs": Int(1, 10_000),
        "batch_size": Int(1, 4096),
        "lr": Float(1e-7, 10.0),
        "holdout": Float(0.01, 0.9),
        "threshold": Float(0.0, 1.0),
        "seed": Int(0),
    },
    "split": {
        "train": Float(0.0, 1.0),
        "val": Float(0.0, 1.0),
        "salt": Str(),
    },
    "priors": {
        "image_size": Int(4, 1024),
        "min_chroma": Float(0.0, 100.0),
        "sigma": Float(0.0, 50.0),
        "mix": Float(0.0, 1.0),
    },
    "train": {
        "model": Choice(MODEL_NAMES, "model"),
        "epochs": Int(1, 10_000),
        "batch_size": Int(1, 4096),
        "lr": Float(1e-7, 10.0),
        "weight_decay": Float(0.0, 1.0),
        "width": Int(1, 1024),
        "depth": Int(1, 6),
        "seed": Int(0),
        "threads": Int(0, 256),
        "deterministic": Bool(),
        "portable": Bool(),
        "device": Choice(("auto", "cpu", "cuda"), "device"),
        "nproc": Int(1, 64),
        "nnodes": Int(1, 1024),
        "rdzv_endpoint": Str(empty=True),
        "warmup_epochs": Int(0, 1000),
        "grad_clip": Float(0.0, 1e6),
        "crop": Int(0, 1024),
        "hard_examples": Float(0.0, 10.0),
        "hard_tag_weight": Float(1.0, 100.0),
        "flip_average": Bool(),
        "unet": {
            "global_context": Bool(),
            "loss": Choice(UNET_LOSSES, "loss"),
            "bins_weight": Float(0.0, 100.0),
            "decode": Choice(UNET_DECODES, "decode"),
            "temperature": Float(1e-3, 10.0),
        },
        "zhang": {
            "temperature": Float(1e-3, 10.0),
            "rebalance": Bool(),
        },
        "resnet": {
            "pretrained": Bool(),
            "weights_url": Str(),
        },
        "gan": {
            "pretrain_epochs": Int(0, 10_000),
            "lambda_l1": Float(0.0, 1e4),
            "lambda_gp": Float(0.0, 1e4),
            "critic_lr": Float(1e-7, 10.0),
        },
    },
    "evaluate": {
        "lookup_bins": Int(2, 1000),
        "grid_images": Int(1, 64),
        "temperatures": ListOf(Float(1e-3, 10.0)),
        "bootstrap_resamples": Int(10, 1_000_000),
        "bootstrap_seed": Int(0),
        "to_fiftyone": Bool(),
    },
}


def _key_name(k: Any) -> str:
    """A key as a message shows it: a string as itself (if short), anything else by repr."""
    return k if isinstance(k, str) and len(k) <= 60 else short(k)


def _validate(node: Any, schema: Any, key: str) -> Any:
    if isinstance(schema, dict):
        where = key or "params"
        if not isinstance(node, dict):
            raise ParamsError(f"{where}: expected a mapping, got {short(node)}")
        unknown = sorted(_key_name(k) for k in node if k not in schema)
        if unknown:
            name = f"{key}.{unknown[0]}" if key else unknown[0]
            close = difflib.get_close_matches(unknown[0], list(schema), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ParamsError(f"{name}: unknown key{hint}")
        out = {}
        for name, sub in schema.items():
            full = f"{key}.{name}" if key else name
            if name not in node:
                raise ParamsError(f"{full}: missing key")
            out[name] = _validate(node[name], sub, full)
        return out
    return schema.check(key, node)


def _cross_checks(p: dict) -> None:
    g = p["data"]["garden"]
    if g["min_size"] > g["max_size"]:
        raise ParamsError(
            f"data.garden.min_size: must be <= data.garden.max_size ({g['max_size']}), got {g['min_size']}"
        )
    s = p["split"]
    if s["train"] + s["val"] >= 1.0:
        raise ParamsError(
            f"split.val: split.train + split.val must leave a test share, got {s['train']} + {s['val']}"
        )
    if s["train"] <= 0:
        raise ParamsError("split.train: must be > 0")
    _model_checks(p["train"], p["ingest"]["image_size"])
    if p["train"]["nnodes"] > 1:
        rdzv_endpoint(p["train"])


_ENDPOINT = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>[0-9]{1,5})")


def rdzv_endpoint(t: dict) -> tuple[str, int]:
    """train.rdzv_endpoint as (host, port): `HOST:PORT` (an IPv6 address in brackets)."""
    value = t["rdzv_endpoint"]
    m = _ENDPOINT.fullmatch(value)
    if not m or not 1 <= int(m["port"]) <= 65535:
        raise ParamsError(f"train.rdzv_endpoint: train.nnodes {t['nnodes']} needs HOST:PORT of node 0 (the machine "
                          f"that runs dvc repro), reachable from every node, e.g. 10.0.0.1:29500; got {short(value)}")
    return m["v6"] or m["host"], int(m["port"])


def _model_checks(t: dict, size: int) -> None:
    """The train params against the working resolution: what every model needs to build."""
    # How many times the model halves its input: zhang and resnet work down to 1/8, the
    # U-Nets halve once per level, the plain CNN three times.
    if t["model"] in ("zhang", "resnet", "cnn"):
        factor, why = 8, f"{t['model']} works at 1/8 resolution"
    else:
        factor, why = 2 ** t["depth"], f"2**depth, depth {t['depth']}"
    if size % factor:
        raise ParamsError(f"ingest.image_size: must be divisible by {factor} ({why}), got {size}")
    if t["crop"] and (t["crop"] > size or t["crop"] % factor):
        raise ParamsError(
            f"train.crop: must be 0 (no crop) or at most ingest.image_size ({size}) and divisible by {factor} ({why}), got {t['crop']}"
        )
    if t["model"] == "unet" and t["unet"]["decode"] == "bins" and not t["unet"]["bins_weight"] > 0:
        raise ParamsError("train.unet.decode: bins needs train.unet.bins_weight > 0 (else the bins head never trains)")
    if t["epochs"] <= t["warmup_epochs"]:
        raise ParamsError(f"train.warmup_epochs: must be below train.epochs ({t['epochs']}), got {t['warmup_epochs']}")


def validate(raw: Any) -> dict:
    """Validate a params mapping and return it with numbers normalised."""
    params = _validate(raw, SCHEMA, "")
    _cross_checks(params)
    return params


# What a checkpoint keeps of the params: all a model needs to be rebuilt and used (its
# train params and the working resolution), and nothing the train stage does not depend on.
# Not where the machines were: a model does not carry node 0's address, and checkpoints
# written before multi-node training (without these keys) still load.
MACHINE_KEYS = ("nnodes", "rdzv_endpoint")
MODEL_SCHEMA = {"train": {k: v for k, v in SCHEMA["train"].items() if k not in MACHINE_KEYS},
                "ingest": {"image_size": SCHEMA["ingest"]["image_size"]}}


def model_args(params: dict) -> dict:
    train = {k: v for k, v in params["train"].items() if k not in MACHINE_KEYS}
    return {"train": train, "ingest": {"image_size": params["ingest"]["image_size"]}}


def validate_model_args(raw: Any) -> dict:
    """A checkpoint's `args`, validated like params.yaml's sections they come from."""
    args = _validate(raw, MODEL_SCHEMA, "")
    _model_checks(args["train"], args["ingest"]["image_size"])
    return args


def load_params(path: str | os.PathLike = paths.PARAMS) -> dict:
    """Read and validate params.yaml; raise ParamsError with a one-line message."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the project root)") from None
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0]
        raise ParamsError(f"{path}: not valid YAML: {first}") from None
    return validate(raw)
