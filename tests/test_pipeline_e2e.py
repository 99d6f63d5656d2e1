"""The real thing: `dvc repro` of the whole pipeline in a fresh git repo, on a tiny config.

Checks metrics.json, that a second repro is a no-op, that the same inputs give the same
outputs, that a train.* change reruns only train and evaluate, that MLflow got the run,
and that a bad param stops the pipeline with a one-line error.

One `dvc repro` builds the project, committed (`built`); every test that changes
something gets its own copy of it (`project`), so the tests pass in any order.
"""
from __future__ import annotations

import json
import math
import re
import shutil

import pytest
import yaml

from tests.conftest import TINY, bin_path, make_project, run

pytestmark = pytest.mark.slow


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def outs_hashes(project) -> dict:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {
        o["path"]: o.get("md5")
        for stage in lock["stages"].values()
        for o in stage.get("outs", [])
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The project after one `dvc repro`, committed: read it, never change it."""
    proj = make_project(tmp_path_factory.mktemp("e2e") / "proj", TINY)
    first = run([bin_path("dvc"), "repro"], proj)
    run(["git", "add", "-A"], proj)
    run(["git", "commit", "-qm", "repro"], proj)
    return proj, first


@pytest.fixture
def project(built, tmp_path):
    """A copy of the built project (git, DVC cache, outputs, FiftyOne database) of its own."""
    proj, first = built
    copy = tmp_path / "proj"
    shutil.copytree(proj, copy, symlinks=True)
    return copy, first


def test_repro_produces_metrics_against_baselines(built):
    proj, first = built
    assert stages_run(first.stdout) == ["params", "download", "ingest", "relevance", "curate", "split", "priors", "train",
                                        "evaluate", "report"]
    metrics = json.loads((proj / "reports" / "metrics.json").read_text())
    for key in ("psnr", "psnr_gray", "psnr_const", "psnr_lookup"):
        assert math.isfinite(metrics[key]) and 5 < metrics[key] < 60, (key, metrics[key])
    assert metrics["best_baseline"] in ("gray", "const", "lookup")
    for key in ("psnr", "ssim", "delta_e", "colourfulness", "psnr_gray", "ssim_lookup", "delta_e_const"):
        assert metrics[f"{key}_ci95_lo"] <= metrics[key] <= metrics[f"{key}_ci95_hi"], key
    assert -1 <= metrics["ssim"] <= 1 and metrics["delta_e"] >= 0
    assert metrics["colourfulness_ratio"] == metrics["colourfulness"] / metrics["colourfulness_truth"]
    html = (proj / "reports" / "report.html").read_text()
    assert "http://" not in html and "https://" not in html and html.count("data:image/png;base64,") >= 5
    assert metrics["n_test"] > 0
    for name in ("eval_per_image.csv", "eval_grid.png", "train_history.csv", "ingest.json", "curate.json",
                 "priors.json", "priors_prior.png", "priors_weights.png", "temperature_sweep.csv",
                 "eval_per_class.csv", "psnr_hist.png", "eval_best_median_worst.png", "report.html"):
        assert (proj / "reports" / name).exists(), name
    ingest = json.loads((proj / "reports" / "ingest.json").read_text())
    assert ingest["found"] == ingest["usable"] + ingest["rejected"] == TINY["data.garden.n_images"]
    curate = json.loads((proj / "reports" / "curate.json").read_text())
    assert curate["kept"] + sum(curate["by_reason"].values()) == curate["found"] == ingest["found"]
    assert {"unreadable", "grayscale", "tinted", "irrelevant", "near_duplicate"} <= set(curate["garden_accuracy"])
    assert json.loads((proj / "reports" / "relevance.json").read_text())["n_train_irrelevant"] > 0
    assert (proj / "reports" / "curate_examples.png").exists()


def test_second_repro_is_a_no_op(built):
    proj, _ = built
    again = run([bin_path("dvc"), "repro"], proj)
    assert stages_run(again.stdout) == []
    assert "Data and pipelines are up to date" in again.stdout
    status = run([bin_path("dvc"), "status"], proj)
    assert "up to date" in status.stdout


def test_same_inputs_same_outputs(project):
    proj, _ = project
    before = outs_hashes(proj)
    run([bin_path("dvc"), "repro", "--force"], proj)
    after = outs_hashes(proj)
    # These hold wall-clock seconds; everything else is bit-identical.
    # (report.html shows the seconds per epoch from train.json)
    timing = {"reports/train_history.csv", "reports/train.json", "reports/report.html"}
    assert {k: v for k, v in before.items() if k not in timing} == {k: v for k, v in after.items() if k not in timing}


def test_train_param_change_reruns_only_params_train_evaluate_and_report(project):
    proj, _ = project
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["train"]["epochs"] += 1
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run([bin_path("dvc"), "repro"], proj)
    assert stages_run(out.stdout) == ["params", "train", "evaluate", "report"]  # params: the file changed


def test_nothing_left_running(built):
    import subprocess

    proj, _ = built
    # The curate stage started its own mongod for FiftyOne; it must be gone.
    ps = subprocess.run(["pgrep", "-af", f"mongod --dbpath {proj}"], capture_output=True, text=True)
    assert ps.stdout.strip() == ""
    assert not (proj / ".fiftyone" / "db" / "mongod.port").exists()


def test_mlflow_run_logged(built):
    proj, _ = built
    import mlflow
    import mlflow.pytorch

    train = json.loads((proj / "reports" / "train.json").read_text())
    client = mlflow.MlflowClient()  # MLFLOW_TRACKING_URI comes from the hermetic fixture
    r = client.get_run(train["mlflow_run_id"])
    assert r.data.params["train.model"] == "unet"
    assert "test_psnr" in r.data.metrics and "test_psnr_gray" in r.data.metrics
    assert len(client.get_metric_history(r.info.run_id, "val_loss")) == int(r.data.params["train.epochs"])
    assert r.data.tags["git_commit"]
    assert r.data.tags["reproduce"] == f"git checkout {r.data.tags['git_commit']} && dvc pull && dvc repro"
    # lineage: the run names the split it trained on by the hash dvc.lock records for it
    lock = yaml.safe_load((proj / "dvc.lock").read_text())
    split_hash = next(o["md5"] for o in lock["stages"]["split"]["outs"] if o["path"] == "data/split")
    (logged,) = r.inputs.dataset_inputs
    assert (logged.dataset.name, logged.dataset.digest, logged.dataset.source_type) == ("data/split", split_hash, "dvc")
    assert json.loads(logged.dataset.source) == {"path": "data/split", "rev": r.data.tags["git_commit"]}
    # evaluate registered the model (a pyfunc colorizer: tests/test_serving.py serves one),
    # the version tagged with DVC's hashes of the data it came from, as dvc.lock has them
    (version,) = client.search_model_versions(f"run_id = '{r.info.run_id}'")
    assert version.name == "colorizer-unet"
    ingest_hash = next(o["md5"] for o in lock["stages"]["ingest"]["outs"] if o["path"] == "data/ingest")
    assert (version.tags["data_split_hash"], version.tags["data_ingest_hash"]) == (split_hash, ingest_hash)
    assert version.tags["git_commit"] == r.data.tags["git_commit"]
    artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"train_grid.png", "metrics.json", "eval_grid.png"} <= artifacts
    # MLflow 3 keeps logged models beside the run; the model must load and predict ab.
    models = [m for m in mlflow.search_logged_models(experiment_ids=[r.info.experiment_id], output_format="list")
              if m.source_run_id == r.info.run_id]
    assert sorted(m.name for m in models) == ["colorizer", "model"]  # the network; the pyfunc evaluate registered
    models = [m for m in models if m.name == "model"]
    import torch

    net = mlflow.pytorch.load_model(models[0].model_uri)
    assert net(torch.zeros(1, 1, 32, 32)).shape == (1, 2, 32, 32)


def test_bad_param_stops_with_one_line_error(project):
    proj, _ = project
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["train"]["model"] = "transformer"
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run([bin_path("dvc"), "repro"], proj, check=False)
    assert out.returncode != 0
    lines = [l for l in (out.stdout + out.stderr).splitlines() if l.startswith("error: train.model")]
    assert lines == ["error: train.model: unknown model 'transformer'; choose from unet, zhang, resnet, gan, cnn"]


def test_zhang_trains_and_evaluates_through_dvc_exp_run(project):
    """`dvc exp run -S train.model=zhang` reruns only train and evaluate (the priors are
    already there), and the temperature changes the decoding."""
    import csv

    proj, _ = project
    out = run([bin_path("dvc"), "exp", "run", "-S", "train.model=zhang", "-S", "train.epochs=2"], proj)
    assert stages_run(out.stdout) == ["params", "train", "evaluate", "report"]  # params: the file changed
    metrics = json.loads((proj / "reports" / "metrics.json").read_text())
    assert math.isfinite(metrics["psnr"]) and metrics["colourfulness"] >= 0
    with open(proj / "reports" / "temperature_sweep.csv") as f:
        sweep = list(csv.DictReader(f))
    assert [float(r["temperature"]) for r in sweep] == [0.01, 0.1, 0.2, 0.38, 0.6, 1.0]
    assert len({r["psnr"] for r in sweep}) > 1  # T changes the decoding
    exps = run([bin_path("dvc"), "exp", "show", "--json"], proj)
    assert "zhang" in exps.stdout
    # experiments compare with DVC's own tools: metrics and plots against the workspace's base
    base = json.loads(run(["git", "show", "HEAD:reports/metrics.json"], proj).stdout)
    diff = json.loads(run([bin_path("dvc"), "metrics", "diff", "--json", "HEAD"], proj).stdout)
    psnr = diff["reports/metrics.json"]["psnr"]
    assert psnr["old"] == base["psnr"] and psnr["new"] == metrics["psnr"] != base["psnr"], psnr
    plots = run([bin_path("dvc"), "plots", "diff", "--json", "HEAD"], proj)
    sweep = json.loads(plots.stdout)["data"]["Annealed-mean temperature against PSNR (dB)"]
    assert {"workspace", "HEAD"} <= set(sweep[0]["revisions"])  # the experiment's sweep against the commit's


def test_a_preset_runs_as_one_dvc_experiment_with_the_unet_options(project):
    """colorize-preset: a presets/*.yaml file becomes `dvc exp run -n NAME -S ...`. This one
    turns on every U-Net option of the real-photo study at once (global context, the bins
    head decoding by annealed mean, test-time flips): they train, evaluate, register and
    sweep the temperature through DVC, and the experiment records what was set."""
    import csv
    import sys

    proj, _ = project
    (proj / "presets").mkdir()
    (proj / "presets" / "tiny-hybrid.yaml").write_text(yaml.safe_dump({"train": {
        "epochs": 2, "flip_average": True,
        "unet": {"global_context": True, "bins_weight": 0.05, "decode": "bins", "temperature": 0.3}}}))
    out = run([sys.executable, "-m", "colorize.cli.preset", "tiny-hybrid", "-S", "train.lr=0.002"], proj)
    assert out.stdout.splitlines()[0].startswith("dvc exp run -n tiny-hybrid -S train.epochs=2 -S train.flip_average=true")
    assert stages_run(out.stdout) == ["params", "train", "evaluate", "report"]
    params = yaml.safe_load((proj / "params.yaml").read_text())["train"]
    assert params["unet"] == {**params["unet"], "global_context": True, "bins_weight": 0.05, "decode": "bins"}
    assert params["lr"] == 0.002 and params["flip_average"] is True
    metrics = json.loads((proj / "reports" / "metrics.json").read_text())
    assert math.isfinite(metrics["psnr"]) and metrics["colourfulness_ratio"] > 0
    with open(proj / "reports" / "temperature_sweep.csv") as f:
        assert len({r["psnr"] for r in csv.DictReader(f)}) > 1  # the bins head decodes by temperature
    shown = run([bin_path("dvc"), "exp", "show", "--json"], proj).stdout
    assert "tiny-hybrid" in shown


def test_every_model_through_the_experiment_queue_into_one_mlflow_store(project):
    """`dvc exp run --queue -S train.model=X` for the other models, then `dvc queue start`:
    each trains and evaluates in DVC's temporary copy and logs to the same MLflow store."""
    import time

    import mlflow

    proj, _ = project
    extra = {"gan": ["-S", "train.gan.pretrain_epochs=1"]}  # so WGAN-GP runs in 2 epochs
    names = {}
    for model in ("resnet", "gan", "cnn"):
        names[model] = f"queued-{model}"
        run([bin_path("dvc"), "exp", "run", "--queue", "-n", names[model], "-S", f"train.model={model}",
             "-S", "train.epochs=2", *extra.get(model, [])], proj)
    run([bin_path("dvc"), "queue", "start", "-j", "1"], proj)
    deadline = time.time() + 1200
    while time.time() < deadline:
        status = run([bin_path("dvc"), "queue", "status"], proj).stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(5)
    assert "Failed" not in status, status + run([bin_path("dvc"), "queue", "logs", names["gan"]], proj, check=False).stdout
    shown = json.loads(run([bin_path("dvc"), "exp", "show", "--json"], proj).stdout)
    assert set(names.values()) <= set(re.findall(r'"name": "([^"]+)"', json.dumps(shown)))
    runs = mlflow.search_runs(experiment_names=["colorize"], output_format="list")
    # (the queued copies may also log curation runs, which carry no model tag)
    by_model = {r.data.tags["model"]: r for r in runs
                if r.data.tags.get("dvc_exp_name") in names.values() and "model" in r.data.tags}
    assert set(by_model) == {"resnet", "gan", "cnn"}
    for model, r in by_model.items():
        assert r.data.tags["dvc_exp_name"] == names[model]
        assert "test_psnr" in r.data.metrics and "test_psnr_gray" in r.data.metrics, model
        assert math.isfinite(r.data.metrics["test_psnr"])
    assert "critic_wasserstein" in by_model["gan"].data.metrics and "gradient_penalty" in by_model["gan"].data.metrics
