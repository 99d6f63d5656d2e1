"""The registered colorizer, served over HTTP by `mlflow models serve`.

evaluate's own `register` logs a checkpoint as the pyfunc colorizer (colorize/serving.py)
and registers it in a real MLflow store (the session's SQLite file); then a real
`mlflow models serve -m models:/<name>/<version> --env-manager local -h 127.0.0.1`
colorizes a photo's gray version over HTTP. The answer must be the `colorize` CLI's
output for that file, pixel for pixel, and keep the input's L.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorize.cli import colorize as cli
from colorize.common import tracking
from colorize.common.colour import rgb_to_lab
from colorize.team.services import free_port
from tests.conftest import SHARED_DATA, bin_path
from tests.test_colorize import _params, save_like_train

pytestmark = pytest.mark.slow
LOOPBACK = "127.0.0.1"


def photo() -> np.ndarray:
    """A real flower photo when the reference set is beside the project, else a smooth
    made-up one (the test is about serving, not about the photo)."""
    files = sorted((SHARED_DATA / "flowers-128" / "rose").glob("*.jpg"))
    if files:
        return np.asarray(Image.open(files[0]).convert("RGB"))
    y, x = np.mgrid[0:96, 0:128] / 128.0
    return (np.stack([np.sin(6 * x) * 0.4 + 0.5, y, 1 - x], -1) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A checkpoint registered by evaluate's `register` from a project folder."""
    from colorize.stages.evaluate import register

    proj = tmp_path_factory.mktemp("serving")
    save_like_train(proj / "models" / "model.pt", _params())
    for folder, content in (("data/split", b"split"), ("data/ingest", b"ingest")):
        (proj / folder).mkdir(parents=True)
        (proj / folder / "part.bin").write_bytes(content)
    cwd = os.getcwd()
    os.chdir(proj)  # a stage runs at its project's root
    try:
        mlflow = tracking.setup()
        with mlflow.start_run() as run:
            name, version = register(mlflow, {"test_psnr": 21.5, "test_psnr_gray": 20.0}, "unet")
        split_hash, ingest_hash = tracking.dvc_hash("data/split"), tracking.dvc_hash("data/ingest")
    finally:
        os.chdir(cwd)
    return {"proj": proj, "name": name, "version": version, "run": run.info.run_id,
            "hashes": (split_hash, ingest_hash)}


def test_registered_version_carries_its_metrics_and_the_hashes_of_its_data(registered):
    import mlflow

    client = mlflow.MlflowClient()
    v = client.get_model_version(registered["name"], registered["version"])
    assert registered["name"] == "colorizer-unet" and v.run_id == registered["run"]
    assert (v.tags["data_split_hash"], v.tags["data_ingest_hash"]) == registered["hashes"]
    assert v.tags["test_psnr"] == "21.5000" and "git_commit" in v.tags
    run = client.get_run(registered["run"])
    (logged,) = [m for m in mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
                 if m.source_run_id == registered["run"] and m.name == "colorizer"]
    assert {m.key: m.value for m in logged.metrics} == {"test_psnr": 21.5, "test_psnr_gray": 20.0}


@pytest.fixture(scope="module")
def server(registered, tmp_path_factory):
    """`mlflow models serve` of the registered version on a free loopback port."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # it runs uvicorn from there
    uri = f"models:/{registered['name']}/{registered['version']}"
    with open(log, "wb") as out:
        proc = subprocess.Popen([bin_path("mlflow"), "models", "serve", "-m", uri, "--env-manager", "local",
                                 "-h", LOOPBACK, "-p", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://{LOOPBACK}:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_served_model_colorizes_a_photo_as_the_cli_does(registered, server, tmp_path):
    gray = cli.gray_band(cli.luminance(photo()))  # the photo's black-and-white version: R = G = B
    body = json.dumps({"inputs": gray[None].tolist()}).encode()
    request = urllib.request.Request(f"{server}/invocations", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as r:
        answer = np.asarray(json.loads(r.read())["predictions"], dtype=np.uint8)
    assert answer.shape == (1, *gray.shape)

    Image.fromarray(gray).save(tmp_path / "gray.png")
    done = subprocess.run([sys.executable, "-m", "colorize.cli.colorize", str(tmp_path / "gray.png"), "-o",
                           str(tmp_path / "out"), "--model", str(registered["proj"] / "models" / "model.pt")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    by_cli = np.asarray(Image.open(tmp_path / "out" / "gray.png").convert("RGB"))
    assert np.array_equal(answer[0], by_cli)  # the same code as the CLI

    lab_in = rgb_to_lab(torch.from_numpy(gray).float() / 255)
    lab_out = rgb_to_lab(torch.from_numpy(answer[0]).float() / 255)
    assert float((lab_out[..., 0] - lab_in[..., 0]).abs().max()) < 0.6  # L kept, up to 8-bit rounding
    assert float(lab_out[..., 1:].norm(dim=-1).mean()) > 2.0  # and colour added (the model's cast)
    if os.environ.get("COLORIZE_DOC_SHOTS"):  # docs/serving.md's picture: what was sent | what came back
        side = np.full((gray.shape[0], 4, 3), 255, np.uint8)
        Image.fromarray(np.concatenate([gray, side, answer[0]], axis=1)).save(
            Path(os.environ["COLORIZE_DOC_SHOTS"]) / "served.png")


def test_served_model_refuses_what_is_not_an_image_batch(server):
    body = json.dumps({"inputs": [[1.5, 2.5]]}).encode()
    request = urllib.request.Request(f"{server}/invocations", data=body, headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request, timeout=60)
    assert e.value.code in (400, 422, 500)
