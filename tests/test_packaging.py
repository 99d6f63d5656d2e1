"""The package as a user gets it: every third-party module the code imports is a pinned
dependency in pyproject.toml (and agrees with requirements.lock and the venv), `pip
wheel .` builds a wheel holding the package and its console scripts, and the installed
`colorize`, `colorize-review` and `colorize-preset` commands (and `python -m colorize`) run from any
directory, not only the repository root."""
from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, bin_path

PACKAGE = "colorize"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def normalised(name: str) -> str:
    """A distribution name as PEP 503 compares them (PyYAML == pyyaml, fiftyone_db == fiftyone-db)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lines) -> dict[str, str]:
    """{normalised name: version} of `name==version` requirement lines (comments ignored)."""
    found = {}
    for line in lines:
        requirement = line.split("#", 1)[0].split(";", 1)[0].strip()
        if requirement:
            name, sep, version = requirement.partition("==")
            found[normalised(name.strip())] = version.strip() if sep else ""
    return found


DECLARED = pins(PYPROJECT["project"]["dependencies"])


def imported_top_level_modules() -> dict[str, set[str]]:
    """{top-level module: files importing it} for every absolute import in the package,
    at any depth (inside functions too)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def third_party_modules() -> dict[str, set[str]]:
    return {m: files for m, files in imported_top_level_modules().items()
            if m != PACKAGE and m not in sys.stdlib_module_names}


def test_the_import_scan_sees_what_the_package_uses():
    """The scan is not vacuous: it finds the libraries the stages are built on, including
    those imported only inside functions (matplotlib, pymongo, requests)."""
    modules = third_party_modules()
    assert {"torch", "numpy", "pandas", "PIL", "yaml", "mlflow", "fiftyone", "matplotlib", "pymongo",
            "requests"} <= set(modules), sorted(modules)


def test_every_imported_module_is_a_pinned_dependency():
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for module, files in sorted(third_party_modules().items()):
        providers = {normalised(d) for d in distributions.get(module, [])}
        assert providers, f"{module} (imported by {sorted(files)}) is not installed in this venv"
        if not providers & set(DECLARED):
            undeclared[module] = sorted(providers)
    assert not undeclared, f"imported but not in pyproject's [project].dependencies: {undeclared}"
    unpinned = sorted(name for name, version in DECLARED.items() if not version)
    assert not unpinned, f"dependencies without an == pin: {unpinned}"


def test_pins_agree_with_the_lock_and_the_venv():
    """`make` installs requirements.lock, then the package without its dependencies: a pin
    in pyproject that the lock does not hold would never be installed."""
    lock = pins((ROOT / "requirements.lock").read_text().splitlines())
    for name, version in DECLARED.items():
        assert name in lock, f"{name} is a dependency but not in requirements.lock"
        assert lock[name].split("+")[0] == version, f"{name}: pyproject pins {version}, the lock {lock[name]}"
        installed = importlib.metadata.version(name)
        assert installed.split("+")[0] == version, f"{name}: pyproject pins {version}, the venv has {installed}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel --no-deps --no-build-isolation .` of a copy of the sources (a build in the
    repository itself would leave build/ and *.egg-info there)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / PACKAGE, src / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp / "dist"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "--no-cache-dir", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_the_wheel_holds_the_package_and_its_console_scripts(wheel):
    version = PYPROJECT["project"]["version"]
    assert wheel.name.startswith(f"{PACKAGE}-{version}-py3-none-any"), wheel.name
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        dist_info = f"{PACKAGE}-{version}.dist-info/"
        entry_points = z.read(dist_info + "entry_points.txt").decode()
        metadata = z.read(dist_info + "METADATA").decode()
    assert "colorize/cli/colorize.py" in names
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / PACKAGE).rglob("*.py")}
    assert sources <= set(names), f"missing from the wheel: {sorted(sources - set(names))}"
    # Only the package: no tests/, bench/ or other top-level package rides along.
    assert {n.split("/")[0] for n in names} == {PACKAGE, dist_info.rstrip("/")}, sorted(names)
    scripts = dict(re.findall(r"^(\S+) = (\S+)$", entry_points.split("[console_scripts]")[1], re.M))
    assert scripts["colorize"] == "colorize.cli.colorize:run"
    assert scripts["colorize-review"] == "colorize.cli.review:run"
    assert scripts["colorize-preset"] == "colorize.cli.preset:run"
    required = pins(line.removeprefix("Requires-Dist: ") for line in metadata.splitlines()
                    if line.startswith("Requires-Dist: ") and "extra ==" not in line)
    assert required == DECLARED


def run_elsewhere(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`cmd` in `cwd` with no PYTHONPATH: what a user's shell in some other folder runs."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("command", "usage", "words"), [
    (["colorize"], "usage: colorize [-h] -o OUTDIR", "--side-by-side"),
    (["colorize-review"], "usage: colorize-review [-h] {app,sync}", "app"),
    (["colorize-review", "app"], "usage: colorize-review app [-h] [--port PORT]", "--dataset"),
    (["colorize-preset"], "usage: colorize-preset [-h] [-S KEY=VALUE] [--print] preset", "--set-param"),
    ([sys.executable, "-m", "colorize"], "usage: colorize [-h] -o OUTDIR", "--render-size"),
])
def test_commands_print_usage_from_any_directory(tmp_path, command, usage, words):
    program = bin_path(command[0]) if command[0] != sys.executable else command[0]
    proc = run_elsewhere([program, *command[1:], "--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(usage), proc.stdout[:500]
    assert words in proc.stdout
    assert list(tmp_path.iterdir()) == []  # --help writes nothing where it runs
