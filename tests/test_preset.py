"""colorize-preset: a named params set (presets/*.yaml) as one `dvc exp run -S ...`.
The run itself, through DVC, is in tests/test_pipeline_e2e.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from colorize.cli import preset
from colorize.common.errors import UserError
from colorize.common.params import ParamsError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # presets/ and params.yaml are read from the project root, as dvc does


def test_every_shipped_preset_is_valid_against_params_yaml():
    names = sorted(p.stem for p in (ROOT / "presets").glob("*.yaml"))
    assert "real-photos" in names
    for name in names:
        assert preset.resolve(name, []), name


def test_values_reach_dvc_as_the_yaml_they_were():
    """DVC parses each -S value as YAML: lists, bools, floats and strings that YAML would
    read as something else must come back as themselves."""
    for value in (["folder"], ["pets-160", "cats"], True, False, 0.003, 1e-4, 30, "../shared/data", "yes", "on",
                  "1.5", "a b", "", None):
        assert yaml.safe_load(preset.as_value(value)) == value, value
    cmd = preset.command("real-photos", preset.resolve("real-photos", []), ["--queue"])
    assert cmd[1:5] == ["exp", "run", "-n", "real-photos"] and cmd[-1] == "--queue"
    assert "data.sources=[folder]" in cmd


def test_extra_sets_come_after_the_preset_and_win():
    sets = preset.resolve("real-photos", ["train.epochs=7", "data.folder.path=/photos"])
    assert sets["train.epochs"] == 7 and sets["data.folder.path"] == "/photos"


@pytest.mark.parametrize("extra, message", [
    (["train.unet.lose=mse"], r"train.unet.lose: unknown key"),
    (["trian.epochs=3"], r"trian.epochs: unknown key"),
    (["train.epochs"], r"expected KEY=VALUE"),
])
def test_a_misspelt_key_is_a_one_line_error_before_dvc_runs(extra, message):
    with pytest.raises(UserError, match=message):
        preset.resolve("real-photos", extra)


def test_a_bad_value_is_the_params_error_naming_the_key():
    with pytest.raises(ParamsError, match=r"^train.epochs: must be >= 1, got 0$"):
        preset.resolve("real-photos", ["train.epochs=0"])


def test_an_unknown_preset_names_the_ones_there_are():
    with pytest.raises(UserError, match=r"no file presets/nope.yaml \(presets here: .*real-photos"):
        preset.resolve("nope", [])
