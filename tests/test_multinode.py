"""Training on several machines (train.nnodes > 1): two nodes simulated on this machine,
both on loopback, node 1 in its own copy of the project. Node 0 writes the outputs, node
1 needs no MLflow store, 2 nodes x 1 process end with the weights of 1 node x 2
processes (as many threads per process), and a node with other params stops them all.
Also the params check of train.rdzv_endpoint and the torchrun command."""
from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from colorize.common import params as P
from colorize.common import paths
from tests.conftest import ROOT, TINY, bin_path, make_project, run


@pytest.fixture
def good():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("endpoint", ["", "node0", "node0:", ":29500", "node0:0", "node0:65536", "a b:1", "::1:29500"])
def test_several_nodes_need_host_and_port(good, endpoint):
    good["train"].update(nnodes=2, rdzv_endpoint=endpoint)
    with pytest.raises(P.ParamsError) as err:
        P.validate(good)
    assert str(err.value).startswith("train.rdzv_endpoint: train.nnodes 2 needs HOST:PORT of node 0")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("endpoint, host, port", [("10.0.0.1:29500", "10.0.0.1", 29500),
                                                  ("gpu-0.lab.example:1", "gpu-0.lab.example", 1),
                                                  ("[fd00::1]:29500", "fd00::1", 29500)])
def test_endpoint_is_host_and_port(good, endpoint, host, port):
    good["train"].update(nnodes=2, rdzv_endpoint=endpoint)
    assert P.rdzv_endpoint(P.validate(good)["train"]) == (host, port)


def test_one_node_needs_no_endpoint_and_checkpoints_keep_no_machines(good):
    p = P.validate(good)
    assert p["train"]["nnodes"] == 1 and p["train"]["rdzv_endpoint"] == ""
    args = P.model_args(p)
    assert "nnodes" not in args["train"] and "rdzv_endpoint" not in args["train"]
    old = copy.deepcopy(args)  # a checkpoint written before multi-node training
    assert P.validate_model_args(old) == args


def test_torchrun_command(monkeypatch):
    from colorize.training import distributed

    calls = []
    monkeypatch.setattr(distributed.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    distributed.relaunch_with_torchrun(2, "colorize.stages.train")
    distributed.relaunch_with_torchrun(4, "colorize.stages.train", nnodes=3, node=2, master=("10.0.0.1", 29500))
    assert calls[0][1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                            "-m", "colorize.stages.train"]
    assert calls[1][1:] == ["-m", "torch.distributed.run", "--nnodes", "3", "--node-rank", "2",
                            "--nproc-per-node", "4", "--master-addr", "10.0.0.1", "--master-port", "29500",
                            "-m", "colorize.stages.train"]


# ----------------------------------------------------------------------- two nodes for real

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_train(proj: Path, **train) -> None:
    p = yaml.safe_load((proj / "params.yaml").read_text())
    p["train"].update(train)
    (proj / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def env_for(proj: Path, mlflow_uri: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(proj), "MLFLOW_TRACKING_URI": mlflow_uri,
            "GLOO_SOCKET_IFNAME": "lo"}  # gloo on loopback only, whatever the hostname resolves to


def start(proj: Path, args: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:  # a file, not a pipe: a full pipe would stall the training
        return subprocess.Popen([sys.executable, "-m", "colorize.stages.train", *args], cwd=proj, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def weights(proj: Path) -> dict:
    import torch

    return torch.load(proj / paths.MODEL, weights_only=True)["model"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny project with the stages before train run (dvc repro split)."""
    proj = make_project(tmp_path_factory.mktemp("multinode") / "base", {**TINY, "train.batch_size": 16})
    run([bin_path("dvc"), "repro", "split"], proj)
    return proj


def two_nodes(base: Path, tmp_path: Path, **node1_train) -> tuple[list[int], list[str], list[Path]]:
    """Node 0 and node 1 (its own copy of the project) at once: exit codes, logs, projects."""
    port = free_port()
    projs = [tmp_path / "node0", tmp_path / "node1"]
    for i, proj in enumerate(projs):
        shutil.copytree(base, proj, symlinks=True)
        set_train(proj, nnodes=2, nproc=1, rdzv_endpoint=f"127.0.0.1:{port}", **(node1_train if i else {}))
    # node 1 gets a store nothing answers at: it must not even check it
    envs = [env_for(projs[0], f"sqlite:///{tmp_path / 'mlflow.db'}"), env_for(projs[1], "http://127.0.0.1:9")]
    procs = [start(projs[i], ["--node-rank", "1"] if i else [], envs[i], tmp_path / f"node{i}.log") for i in (0, 1)]
    try:
        codes = [p.wait(timeout=600) for p in procs]
    finally:
        for p in procs:  # the whole group: the stage, its torchrun and the workers
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return codes, [(tmp_path / f"node{i}.log").read_text() for i in (0, 1)], projs


@pytest.mark.slow
def test_two_nodes_train_like_one_node_with_two_processes(base, tmp_path):
    import torch

    codes, logs, (node0, node1) = two_nodes(base, tmp_path)
    assert codes == [0, 0], [log[-3000:] for log in logs]
    assert "--nnodes 2 --node-rank 0 --nproc-per-node 1 --master-addr 127.0.0.1 --master-port" in logs[0]
    assert "train: node 1 of 2 finished; node 0 wrote models/model.pt" in logs[1]
    assert (node0 / paths.MODEL).exists() and not (node0 / paths.RESUME).exists()
    assert not (node1 / paths.MODEL).exists() and not (node1 / paths.TRAIN_REPORT).exists()
    report = json.loads((node0 / paths.TRAIN_REPORT).read_text())
    assert report["world_size"] == 2
    sums = report["rank_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]

    single = tmp_path / "single"
    shutil.copytree(base, single, symlinks=True)
    # The same ranks, batches and global batch, and the same threads per process: a
    # parallel sum's order depends on how many threads split it (docs/reproducibility.md),
    # and train.threads are per machine, so each node's one process has 2, and each of one
    # machine's 2 processes needs threads: 4 to have 2 as well. With 1 thread each instead,
    # 51 of the 62 tensors differ (by up to 1.5e-4 after these 2 epochs).
    set_train(single, nnodes=1, nproc=2, threads=4)
    out = run([sys.executable, "-m", "colorize.stages.train"], single, timeout=600,
              env=env_for(single, f"sqlite:///{tmp_path / 'mlflow.db'}"))
    assert "--standalone --nproc_per_node=2" in out.stdout
    a, b = weights(node0), weights(single)
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


@pytest.mark.slow
def test_a_node_with_other_params_stops_every_node(base, tmp_path):
    codes, logs, _ = two_nodes(base, tmp_path, lr=0.001)
    assert codes[0] != 0 and codes[1] != 0
    for log in logs:
        assert "error: train: ranks [1] have other params.yaml or data than rank 0" in log
