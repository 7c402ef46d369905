from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from convtrain.cli.app import app
from convtrain.config.load import load_config
from convtrain.config.reference import schema_rows
from convtrain.config.schema import RunConfig, from_dict, to_dict, to_yaml
from convtrain.errors import ConfigError

from ..conftest import CONFIGS

runner = CliRunner()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_starts_with_its_command(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    assert cfg.name == path.stem
    first = path.read_text().splitlines()[0]
    # runnable as it stands from any folder (a pip user has no configs/ folder): --config NAME
    assert first.startswith("# convtrain ") and f" --config {path.stem} " in f"{first} "


def test_defaults_yaml_and_set_precedence(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lr: 0.01\ntrain:\n  epochs: 3\n")
    cfg = load_config(p, ["optim.lr=3e-4"])
    assert cfg.optim.lr == pytest.approx(3e-4)  # --set beats YAML
    assert cfg.train.epochs == 3  # YAML beats default
    assert cfg.train.batch_size == RunConfig().train.batch_size  # default


def test_resolved_config_round_trips():
    cfg = load_config(CONFIGS[0], ["model.kwargs.hidden=64"])
    again = from_dict(yaml.safe_load(to_yaml(cfg)))
    assert to_dict(again) == to_dict(cfg)


@pytest.mark.parametrize("text, overrides, expected", [
    ("optim:\n  lrr: 0.1\n", [], "unknown key 'optim.lrr' (did you mean 'optim.lr'?)"),
    ("trian:\n  epochs: 1\n", [], "unknown key 'trian' (did you mean 'train'?)"),
    ("train:\n  epochs: two\n", [], "'train.epochs' must be an integer, got str 'two'"),
    ("train:\n  epochs: 1.5\n", [], "'train.epochs' must be an integer"),
    ("optim:\n  lr: -0.1\n", [], "'optim.lr' must be > 0"),
    ("optim:\n  lr: 0\n", [], "'optim.lr' must be > 0"),
    ("train:\n  batch_size: 0\n", [], "'train.batch_size' must be > 0"),
    ("model:\n  name: artcle_cnn\n", [], "(did you mean 'article_cnn'?)"),
    ("optim:\n  name: adamm\n", [], "'optim.name' is 'adamm', not one of: adam, adamw, sgd (did you mean 'adam'?)"),
    ("sched:\n  name: cosin\n", [], "(did you mean 'cosine'?)"),
    ("data:\n  name: fashion\n", [], "'data.name' is 'fashion'"),
    ("model:\n  kwargs:\n    hiden: 3\n", [], "'model.kwargs.hiden' is not an argument of model 'article_cnn' (did you mean 'hidden'?)"),
    ("", ["optim.lr=abc"], "--set: 'optim.lr' must be a number"),
    ("", ["optim.lrr=1"], "unknown key 'optim.lrr' (did you mean 'optim.lr'?)"),
    ("", ["optim.lr.x=1"], "'optim.lr' is a number, it has no sub-keys"),
    ("", ["optim.lr"], "expected key.path=value"),
    ("- a\n- b\n", [], "top level must be a mapping"),
])
def test_config_errors_name_key_and_source(tmp_path, text, overrides, expected):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(p, overrides)
    assert expected in str(info.value)
    assert str(p) in str(info.value) or overrides


def test_malformed_yaml_reports_line_and_column(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("train:\n  epochs: 1\n bad: [\n")
    with pytest.raises(ConfigError, match=r"malformed YAML at line \d+, column \d+"):
        load_config(p)


def test_missing_and_directory_config(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_yaml_float_without_dot_is_accepted(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lr: 1e-3\n")  # PyYAML reads this as a string
    assert load_config(p).optim.lr == pytest.approx(1e-3)


def test_data_root_precedence(tmp_path, monkeypatch):
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  root: from-yaml\n")
    monkeypatch.delenv("CONVTRAIN_DATA_ROOT", raising=False)
    assert load_config(p).data.root == "from-yaml"
    monkeypatch.setenv("CONVTRAIN_DATA_ROOT", "from-env")
    assert load_config(p).data.root == "from-env"
    assert load_config(p, ["data.root=from-set"]).data.root == "from-set"
    assert load_config(p, ["data.root=from-set"], data_root="from-flag").data.root == "from-flag"


def test_schema_rows_cover_every_leaf_key():
    keys = {r[0] for r in schema_rows()}
    for needed in ("seed", "device", "model.name", "data.name", "data.root", "data.val_size", "data.train_subset",
                   "train.epochs", "train.batch_size", "train.max_steps_per_epoch", "optim.name", "optim.lr",
                   "sched.name"):
        assert needed in keys


@pytest.mark.parametrize("args, expected", [
    (["--set", "optim.lrr=1"], "unknown key 'optim.lrr' (did you mean 'optim.lr'?)"),
    (["--set", "train.epochs=x"], "'train.epochs' must be an integer"),
    (["--set", "optim.lr=-1"], "'optim.lr' must be > 0"),
])
def test_cli_config_errors_exit_2_with_one_line(args, expected):
    result = runner.invoke(app, ["train", "--config", str(CONFIGS[0]), *args])
    assert result.exit_code == 2
    assert expected in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_config_show_prints_resolved_yaml():
    result = runner.invoke(app, ["config", "show", "--config", "configs/mnist.yaml", "--set", "optim.lr=0.003"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown["optim"]["lr"] == pytest.approx(0.003)
    assert shown["name"] == "mnist"
    assert shown["model"]["name"] == "article_cnn"


@pytest.mark.parametrize("value, expected", [("true", True), ("false", False), ("default", "default"),
                                             ("reduce-overhead", "reduce-overhead"), ("max-autotune", "max-autotune")])
def test_speed_compile_takes_a_bool_or_a_mode(value, expected):
    cfg = load_config(None, [f"speed.compile={value}"])
    assert cfg.speed.compile == expected and type(cfg.speed.compile) is type(expected)
    assert from_dict(to_dict(cfg)).speed.compile == expected  # what a checkpoint's saved config restores


@pytest.mark.parametrize("value, expected", [("reduce-overhed", "did you mean 'reduce-overhead'"),
                                             ("3", "must be a boolean or string, got int 3"),
                                             ("[1]", "must be a boolean or string")])
def test_speed_compile_refuses_other_values(value, expected):
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[")):
        load_config(None, [f"speed.compile={value}"])
