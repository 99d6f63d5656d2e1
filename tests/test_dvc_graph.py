"""dvc.yaml is the project's graph, and DVC trusts it: a stage reruns only when one of its
declared deps changes. So the deps must be complete, or an edit silently leaves a stale
output. These tests derive each stage's code deps from the code itself (the project
modules its command imports, transitively, from the source: every `import`, also inside
functions) and hold dvc.yaml to exactly that set."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

PACKAGE = "colorize"


def module_file(name: str) -> Path | None:
    """The source file of project module `name` (a package's __init__), or None."""
    parts = name.split(".")
    for candidate in (ROOT.joinpath(*parts).with_suffix(".py"), ROOT.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, name: str) -> set[str]:
    """Project modules that the file imports (any `import` statement, at any depth)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {m for m in found if m.split(".")[0] == PACKAGE and module_file(m) is not None}


def inert(path: Path) -> bool:
    """A module that runs no code of its own: a docstring and literal constants only (an
    empty package __init__), so no change in it can change an output."""
    body = ast.parse(path.read_text()).body
    return all(isinstance(node, (ast.Expr, ast.Assign)) and isinstance(node.value, ast.Constant) for node in body)


def closure(start: str) -> set[Path]:
    """Every project source file that importing `start` runs, parents' __init__ included
    (inert ones left out)."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run first
        todo += sorted(imported_modules(module_file(name), name))
    return {module_file(m).relative_to(ROOT) for m in seen if not inert(module_file(m))}


def stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def stage_module(cmd: str) -> str:
    match = re.fullmatch(r"python -m ([\w.]+)", cmd.strip())
    assert match, f"stage command {cmd!r} is not `python -m <module>`"
    return match.group(1)


def declared_code(stage: dict) -> set[Path]:
    return {Path(d) for d in stage.get("deps", []) if d.endswith(".py")}


@pytest.mark.parametrize("name", list(stages()))
def test_stage_deps_are_exactly_the_code_it_imports(name):
    stage = stages()[name]
    needed = closure(stage_module(stage["cmd"]))
    declared = declared_code(stage)
    assert not needed - declared, f"{name}: dvc.yaml misses deps {sorted(map(str, needed - declared))}"
    assert not declared - needed, f"{name}: dvc.yaml lists code it does not import {sorted(map(str, declared - needed))}"


# ---------------------------------------------------------------------------- params

# Runs a stage's module as DVC does, with load_params() answering a mapping that records
# every key the stage reads (iterating a section counts as reading all of it); the keys
# go to the file named in argv[1].
RECORDER = r"""
import atexit, json, runpy, sys
from colorize.common import portable
portable.pin()  # as the data stages do when run as programs (before numpy, which params imports)
import colorize.common.params as P

read = set()

class Recorded(dict):
    def __init__(self, data, prefix=""):
        super().__init__({k: Recorded(v, f"{prefix}{k}.") if isinstance(v, dict) else v for k, v in data.items()})
        self.prefix = prefix
    def _all(self):
        read.update(self.prefix + k for k in dict.keys(self))
    def __getitem__(self, key):
        read.add(self.prefix + key)
        return dict.__getitem__(self, key)
    def get(self, key, default=None):
        read.add(self.prefix + key)
        return dict.get(self, key, default)
    def __iter__(self):
        self._all()
        return dict.__iter__(self)
    def keys(self):
        self._all()
        return dict.keys(self)
    def items(self):
        self._all()
        return dict.items(self)
    def values(self):
        self._all()
        return dict.values(self)

validated = P.load_params
P.load_params = lambda *a, **k: Recorded(validated(*a, **k))
out, module = sys.argv[1], sys.argv[2]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(read))))
sys.argv = [module]
runpy.run_module(module, run_name="__main__")
"""


def covered(key: str, declared: list[str]) -> bool:
    """A key read is covered by a declared params entry that is it or a section above it."""
    return any(key == d or key.startswith(d + ".") for d in declared)


def leaves(keys: set[str]) -> set[str]:
    """Only the most specific keys: reading `train.zhang.temperature` implies `train.zhang`."""
    return {k for k in keys if not any(other.startswith(k + ".") for other in keys)}


@pytest.fixture(scope="module")
def keys_read(tmp_path_factory) -> dict[str, set[str]]:
    """Every stage run in order on a tiny project, each recording the params keys it reads."""
    import os
    import subprocess
    import sys

    from tests.conftest import TINY, make_project

    proj = make_project(tmp_path_factory.mktemp("graph") / "proj", TINY)
    env = {**os.environ, "PYTHONPATH": str(proj), "PYTHONUNBUFFERED": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{proj / 'mlflow.db'}"}
    read = {}
    for name, stage in stages().items():
        out = proj / f".keys-{name}.json"
        done = subprocess.run([sys.executable, "-c", RECORDER, str(out), stage_module(stage["cmd"])], cwd=proj,
                              env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{name}: {done.stderr[-3000:]}"
        read[name] = set(json.loads(out.read_text()))
    return read


@pytest.mark.slow
@pytest.mark.parametrize("name", list(stages()))
def test_stage_params_deps_cover_every_key_it_reads(keys_read, name):
    declared = [p if isinstance(p, str) else next(iter(p)) for p in stages()[name].get("params", [])]
    missing = sorted(k for k in leaves(keys_read[name]) if not covered(k, declared))
    assert not missing, f"{name} reads params that dvc.yaml does not give it: {missing}"
