"""Params validation: every bad value gets a one-line error that names its key."""
import copy
import subprocess
import sys

import pytest
import yaml

from colorize.common import params as P
from colorize.training.models import MODELS
from colorize.sources.registry import SOURCES
from tests.conftest import ROOT


@pytest.fixture
def good():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_project_params_are_valid(good):
    P.validate(good)


def test_registries_match_the_schema():
    assert set(P.SOURCE_NAMES) == set(SOURCES)
    assert set(P.MODEL_NAMES) == set(MODELS)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("train.epochs", "ten", "train.epochs: expected an integer"),
        ("train.epochs", 0, "train.epochs: must be >= 1"),
        ("train.epochs", 2.5, "train.epochs: expected an integer"),
        ("train.lr", -1.0, "train.lr: must be >= "),
        ("train.model", "unnet", "train.model: unknown model 'unnet' (did you mean 'unet'?)"),
        ("data.sources", ["garden", "flickr"], "data.sources[1]: unknown source 'flickr'"),
        ("data.sources", [], "data.sources: expected at least 1"),
        ("data.sources", "garden", "data.sources: expected a list"),
        ("split.train", 0.9, "split.val: split.train + split.val must leave a test share"),
        ("data.garden.min_size", 200, "data.garden.min_size: must be <= data.garden.max_size"),
        ("ingest.image_size", 100, "ingest.image_size: must be divisible by 8 (2**depth, depth 3), got 100"),
        ("priors.mix", 1.5, "priors.mix: must be <= 1.0"),
        ("train.zhang.temperature", 0, "train.zhang.temperature: must be >= 0.001"),
        ("train.zhang.rebalance", "yes", "train.zhang.rebalance: expected true or false"),
        ("evaluate.temperatures", [], "evaluate.temperatures: expected at least 1"),
        ("train.deterministic_typo", True, "train.deterministic_typo: unknown key"),
    ],
)
def test_bad_values_name_their_key(good, key, value, message):
    bad = copy.deepcopy(good)
    node = bad
    *parents, last = key.split(".")
    for p in parents:
        node = node[p]
    node[last] = value
    with pytest.raises(P.ParamsError) as err:
        P.validate(bad)
    text = str(err.value)
    assert message in text
    assert "\n" not in text


def test_zhang_needs_a_size_divisible_by_8(good):
    bad = copy.deepcopy(good)
    bad["train"].update(model="zhang", depth=1)
    bad["ingest"]["image_size"] = 36  # fine for a 1-level U-Net, not for zhang's 1/8
    with pytest.raises(P.ParamsError, match="must be divisible by 8 .zhang works at 1/8 resolution., got 36"):
        P.validate(bad)


def test_missing_key(good):
    del good["train"]["epochs"]
    with pytest.raises(P.ParamsError, match=r"^train.epochs: missing key$"):
        P.validate(good)


def test_stage_exits_with_one_line_error(tmp_path, good):
    good["train"]["epochs"] = "many"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(good))
    proc = subprocess.run(
        [sys.executable, "-m", "colorize.stages.split"], cwd=tmp_path, capture_output=True, text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: train.epochs: expected an integer, got 'many'"


def test_invalid_yaml(tmp_path):
    (tmp_path / "params.yaml").write_text("train: [unclosed\n")
    with pytest.raises(P.ParamsError, match="not valid YAML"):
        P.load_params(tmp_path / "params.yaml")
