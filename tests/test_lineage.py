"""Lineage: every training run names the data it read by DVC's own hash of it.

`tracking.dvc_hash` must equal what DVC records (checked against a real `dvc add`), and
runs logged through `tracking.log_data` must show the same digest for the same data and
a different one for different data (a real MLflow store: the session's SQLite file).
The training run's own input is checked in test_pipeline_e2e.py::test_mlflow_run_logged.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import yaml

from colorize.common import tracking
from tests.conftest import bin_path, run


def _data(folder, seed: int):
    """A small split-like folder: a table and two shard files."""
    (folder / "shards").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    (folder / "manifest.csv").write_text("id,split\na,train\nb,test\n")
    for k in range(2):
        (folder / "shards" / f"{k:05d}.npy").write_bytes(rng.integers(0, 255, 1000, dtype=np.uint8).tobytes())
    return folder


def test_dvc_hash_is_the_hash_dvc_records(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    run(["git", "init", "-q"], repo)
    run([bin_path("dvc"), "init", "-q"], repo)
    _data(repo / "split", 0)
    (repo / "single.bin").write_bytes(b"\x00\x01" * 500)
    run([bin_path("dvc"), "add", "-q", "split", "single.bin"], repo)
    for name in ("split", "single.bin"):
        recorded = yaml.safe_load((repo / f"{name}.dvc").read_text())["outs"][0]["md5"]
        assert tracking.dvc_hash(repo / name) == recorded, name
    assert tracking.dvc_hash(repo / "split").endswith(".dir")


def test_runs_on_the_same_data_share_a_digest_and_runs_on_other_data_do_not(tmp_path):
    import mlflow

    a = _data(tmp_path / "a" / "data" / "split", 0)
    same = tmp_path / "same" / "data" / "split"
    shutil.copytree(a, same)
    other = _data(tmp_path / "other" / "data" / "split", 1)  # other shard bytes

    tracking.setup()
    digests = {}
    for name, folder in (("a", a), ("same", same), ("other", other)):
        cwd = os.getcwd()
        os.chdir(folder.parents[1])  # a stage runs at its project's root: the path logged is data/split
        try:
            with mlflow.start_run(tags=tracking.run_tags()) as r:
                tracking.log_data(mlflow, "data/split", "training")
        finally:
            os.chdir(cwd)
        (logged,) = mlflow.MlflowClient().get_run(r.info.run_id).inputs.dataset_inputs
        assert logged.dataset.name == "data/split" and logged.dataset.source_type == "dvc"
        assert [(t.key, t.value) for t in logged.tags] == [("mlflow.data.context", "training")]
        digests[name] = logged.dataset.digest
    assert digests["a"] == digests["same"] == tracking.dvc_hash(a)
    assert digests["other"] != digests["a"]
