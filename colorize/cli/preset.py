"""colorize-preset: a DVC experiment from a named set of params (presets/<name>.yaml).

A preset is a small YAML file with the params.yaml keys it changes, each with a comment
saying why (presets/real-photos.yaml: the recipe for real photos, docs/quality.md). It
becomes one `dvc exp run -S KEY=VALUE ...`: params.yaml stays the fast default, the
experiment records exactly what was set, and `dvc exp show` compares it with the rest.

    colorize-preset real-photos                      # dvc exp run -n real-photos -S ... (runs it)
    colorize-preset real-photos --print              # the command only
    colorize-preset real-photos -S data.folder.path=~/my-flowers --queue   # later -S win; dvc options pass through

Also `python -m colorize.cli.preset`. The preset and the extra -S are checked against
params.yaml's schema first: a misspelt key is a one-line error, not a failed run.
"""
from __future__ import annotations

import argparse
import copy
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from colorize.common.errors import UserError, run_main
from colorize.common.params import load_params, validate

PRESETS = Path("presets")  # relative to the project root, where dvc runs


def preset_path(name: str) -> Path:
    """presets/<name>.yaml, or a path to any preset file."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else PRESETS / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml"))) or "none"
        raise UserError(f"preset {name!r}: no file {path} (presets here: {known})")
    return path


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """{"train": {"epochs": 30}} -> {"train.epochs": 30}: DVC's -S keys."""
    out: dict[str, object] = {}
    for key, value in tree.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, full + "."))
        else:
            out[full] = value
    return out


def as_value(value: object) -> str:
    """A value as `dvc exp run -S` reads it (YAML): [a, b], true, 0.003."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def parse_set(item: str) -> tuple[str, object]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise UserError(f"-S {item!r}: expected KEY=VALUE, e.g. train.epochs=30")
    return key, yaml.safe_load(value)


def resolve(name: str, extra: list[str]) -> dict[str, object]:
    """The preset's keys, then the extra -S (later wins), checked against params.yaml."""
    raw = yaml.safe_load(preset_path(name).read_text()) or {}
    if not isinstance(raw, dict):
        raise UserError(f"preset {name!r}: expected a mapping of params.yaml keys")
    sets = flatten(raw)
    sets.update(parse_set(item) for item in extra)
    params = copy.deepcopy(load_params())  # the project's params.yaml: run from its root, as dvc
    for key, value in sets.items():
        node = params
        *parents, last = key.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise UserError(f"preset {name!r}: {key}: unknown key (not in params.yaml)")
            node = node[p]
        if last not in node:
            raise UserError(f"preset {name!r}: {key}: unknown key (not in params.yaml)")
        node[last] = value
    validate(params)  # ParamsError: one line, the key named
    return sets


def dvc() -> str:
    """The dvc beside this Python (a venv not activated), else the one on PATH."""
    beside = Path(sys.executable).parent / "dvc"
    return str(beside) if beside.exists() else "dvc"


def command(name: str, sets: dict[str, object], dvc_args: list[str]) -> list[str]:
    cmd = [dvc(), "exp", "run", "-n", Path(name).stem]
    for key, value in sets.items():
        cmd += ["-S", f"{key}={as_value(value)}"]
    return cmd + dvc_args


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="colorize-preset", description=__doc__.splitlines()[0])
    ap.add_argument("preset", help="a name in presets/ (real-photos) or a path to a preset .yaml")
    ap.add_argument("-S", "--set-param", action="append", default=[], metavar="KEY=VALUE",
                    help="one more param, after the preset's (later wins)")
    ap.add_argument("--print", action="store_true", help="print the dvc command; run nothing")
    args, dvc_args = ap.parse_known_args(argv)
    cmd = command(args.preset, resolve(args.preset, args.set_param), dvc_args)
    print(shlex.join(["dvc", *cmd[1:]]), flush=True)
    if not args.print:
        sys.exit(subprocess.run(cmd).returncode)


def run() -> None:
    run_main(main)


if __name__ == "__main__":
    run()
