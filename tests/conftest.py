"""Shared fixtures. Tests are hermetic: their own HOME, MLflow store and DVC settings."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# CI runs the same examples every time (a red build must be reproducible, not luck); a
# local run explores new ones, and `.hypothesis/` replays any failure it found.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI", "").lower() in ("true", "1"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_collection_modifyitems(items):
    """Marks by what a test needs, for `make test-fast` (-m "not slow and not bench and not
    browser"): a browser test is one that asks for the browser tools; the bench smoke pass
    is tests/test_bench.py."""
    for item in items:
        if "browser_tools" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)
        if item.path.name == "test_bench.py":
            item.add_marker(pytest.mark.bench)


@pytest.fixture(autouse=True, scope="session")
def hermetic_env(tmp_path_factory):
    """Session-wide, so module-scoped fixtures (the e2e project) see it too."""
    monkeypatch = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("FIFTYONE_DO_NOT_TRACK", "true")
    monkeypatch.setenv("FIFTYONE_DATABASE_VALIDATION", "false")
    monkeypatch.delenv("FIFTYONE_DATABASE_URI", raising=False)  # each project starts its own
    monkeypatch.delenv("FIFTYONE_DATABASE_DIR", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "test")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "test@example.com")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "test")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "test@example.com")
    yield
    monkeypatch.undo()


def bin_path(name: str) -> str:
    """A console script of this venv (dvc, mlflow), whatever PATH says."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def run(cmd, cwd, check=True, env=None, timeout=900) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    full_env["PATH"] = f"{Path(sys.executable).parent}:{full_env['PATH']}"
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=full_env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def make_project(dest: Path, params_overrides: dict | None = None) -> Path:
    """A fresh git+DVC repo holding this project's pipeline, for real `dvc repro` runs."""
    import yaml

    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / "colorize", dest / "colorize", ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "data" / "folder").mkdir(parents=True)
    (dest / "data" / "folder" / ".gitkeep").touch()
    (dest / "data" / "curation").mkdir(parents=True)
    shutil.copy(ROOT / "data" / "curation" / "decisions.csv", dest / "data" / "curation" / "decisions.csv")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in (params_overrides or {}).items():
        node = params
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], dest)
    run([bin_path("dvc"), "init", "-q"], dest)
    run([bin_path("dvc"), "config", "core.analytics", "false"], dest)
    run([bin_path("dvc"), "config", "core.check_update", "false"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "init"], dest)
    return dest


TINY = {
    "data.garden.n_images": 120,
    "ingest.image_size": 32,
    "curate.min_side": 24,
    "train.epochs": 2,
    "train.width": 8,
    "train.depth": 2,
    "train.crop": 24,
    "evaluate.grid_images": 4,
}


BROWSER_DIR = ROOT / "tests" / "browser"
IN_CI = os.environ.get("CI", "").lower() in ("true", "1")


@pytest.fixture(scope="module")
def browser_tools() -> None:
    """Chromium, node and playwright-core, from `make browser`. Browser tests skip with a
    reason where they are missing, except in CI, where they must run."""
    missing = []
    if not shutil.which("chromium"):
        missing.append("Debian chromium (apt-get install chromium)")
    if not shutil.which("node"):
        missing.append("node (apt-get install nodejs npm)")
    if not (BROWSER_DIR / "node_modules" / "playwright-core" / "package.json").exists():
        missing.append("tests/browser/node_modules (npm ci in tests/browser)")
    if missing:
        message = "browser test needs " + ", ".join(missing) + ": run `make browser`"
        if IN_CI:
            pytest.fail(message + " (CI=true: browser tests must not skip)")
        pytest.skip(message)
