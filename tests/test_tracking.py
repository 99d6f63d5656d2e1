"""MLflow store location and run tags."""
from pathlib import Path

from colorize.common import tracking


def test_project_root_escapes_dvc_experiment_copies(tmp_path):
    inside = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpab12" / "sub"
    inside.mkdir(parents=True)
    assert tracking.project_root(inside) == tmp_path / "repo"
    assert tracking.project_root(tmp_path) == tmp_path.resolve()


def test_default_uri_is_absolute_sqlite_in_project(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    uri = tracking.tracking_uri()
    assert uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert Path(uri.removeprefix("sqlite:///")).is_absolute()


def test_env_uri_wins(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.tracking_uri() == "http://127.0.0.1:5999"


def test_tags_from_dvc_experiment(monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "brisk-lime")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "abc123")
    tags = tracking.run_tags({"model": "unet"})
    assert tags["dvc_exp_name"] == "brisk-lime" and tags["dvc_exp_baseline_rev"] == "abc123"
    assert tags["model"] == "unet" and "git_commit" in tags


def test_default_store_puts_artifacts_beside_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    mlflow = tracking.setup()
    exp = mlflow.get_experiment_by_name(tracking.EXPERIMENT)
    assert exp.artifact_location == (tmp_path.resolve() / "mlartifacts").as_uri()
    with mlflow.start_run():
        mlflow.log_text("hello", "note.txt")
    assert list((tmp_path / "mlartifacts").rglob("note.txt"))
