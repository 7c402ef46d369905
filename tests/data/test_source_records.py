"""One record per data source (convtrain/data/sources.py): what `--data PATH` claims, the run it names,
the names the config takes, and a source registered from outside the package working end to end.

Breaks tried: folder's claim taking every folder before csv's (the Kaggle folder became a folder
dataset: the claim and the naming tests failed); `names()` as one sorted list (the order test failed);
config/schema.py reading a fixed list of names again (the registered toy source was refused as an
unknown data.name).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from convtrain.config.load import load_config
from convtrain.data import sources
from convtrain.data.detect import data_overrides
from convtrain.data.types import DataBundle, Split
from convtrain.errors import ConfigError


def test_data_path_is_claimed_by_the_source_whose_files_it_is(tmp_path):
    (tmp_path / "digits" / "train").mkdir(parents=True)
    (tmp_path / "kaggle").mkdir()
    (tmp_path / "kaggle" / "train.csv").write_text("label,pixel0\n")
    (tmp_path / "mine.csv").write_text("label,pixel0\n")
    (tmp_path / "notes.txt").write_text("x")
    claimed = {p: (lambda s, r: (s.name, r))(*sources.claim(tmp_path / p)) for p in ("digits", "kaggle", "mine.csv")}
    assert claimed == {"digits": ("folder", tmp_path / "digits"), "kaggle": ("csv", tmp_path / "kaggle" / "train.csv"),
                       "mine.csv": ("csv", tmp_path / "mine.csv")}
    with pytest.raises(ConfigError, match=r"notes.txt: not a dataset convtrain reads; give a folder \(DIR/train"):
        sources.claim(tmp_path / "notes.txt")
    with pytest.raises(ConfigError, match="gone: not found"):
        sources.claim(tmp_path / "gone")


def test_data_overrides_name_the_run_after_the_data(tmp_path):
    (tmp_path / "kaggle").mkdir()
    (tmp_path / "kaggle" / "train.csv").write_text("label,pixel0\n")
    (tmp_path / "letters" / "train").mkdir(parents=True)
    assert data_overrides(str(tmp_path / "kaggle"), ["train.epochs=1"], False) == [
        "data.name=csv", f"data.root={tmp_path / 'kaggle' / 'train.csv'}", "name=kaggle", "train.epochs=1"]
    assert data_overrides(str(tmp_path / "letters"), None, False)[2] == "name=letters"
    assert data_overrides(str(tmp_path / "letters"), None, True) == ["data.name=folder", f"data.root={tmp_path / 'letters'}"]


def test_names_registered_first_then_the_users_files_and_each_record_says_what_it_is():
    assert sources.names()[:4] == ["fashion_mnist", "mnist", "folder", "csv"]
    assert sources.registered_names() == ["fashion_mnist", "mnist"]
    assert [n for n in sources.names() if sources.get(n).mnist_style] == ["fashion_mnist", "mnist"]
    assert sources.find("cifar") is None
    with pytest.raises(ConfigError, match="unknown dataset 'mnsit' \\(did you mean 'mnist'\\?\\)"):
        sources.get("mnsit")
    with pytest.raises(ValueError, match="already registered"):
        sources.register(sources.SOURCES["csv"])


def _toy_bundle(data_cfg, seed: int) -> DataBundle:
    g = torch.Generator().manual_seed(seed)
    split = Split(torch.randint(0, 256, (12, 1, 8, 8), generator=g, dtype=torch.uint8), torch.arange(12) % 3)
    return DataBundle(split, split, split, ["a", "b", "c"], [0.5], [0.25])


def test_a_source_registered_from_outside_the_package_is_taken_by_config_data_and_inspect(tmp_path, monkeypatch):
    from convtrain.data.inspect import inspect_data

    toy = sources.Source("toy", _toy_bundle, lambda cfg, seed, split: _toy_bundle(cfg, seed),
                         claims=lambda p: p if p.suffix == ".toy" else None)
    monkeypatch.setitem(sources.SOURCES, "toy", toy)
    (tmp_path / "x.toy").write_text("")
    sets = data_overrides(str(tmp_path / "x.toy"), ["data.image_size=8"], False)
    assert sets[:3] == ["data.name=toy", f"data.root={tmp_path / 'x.toy'}", "name=x"]
    cfg = load_config(None, sets)
    assert cfg.data.root == str(tmp_path / "x.toy")  # not a registered dataset: CONVTRAIN_DATA_ROOT leaves it alone
    assert sources.build(cfg.data, 0).classes == ["a", "b", "c"]
    info = inspect_data(cfg, 0)
    assert info["decoded_as"] == [1, 8, 8] and info["splits"]["train"]["per_class"] == {"a": 4, "b": 4, "c": 4}


def test_a_file_predict_reads_many_images_from_is_found_through_the_records(tmp_path):
    unlabelled = tmp_path / "test.csv"
    unlabelled.write_text("pixel0,pixel1,pixel2,pixel3\n1,2,3,4\n\n5,6,7,8\n")
    rows = sources.image_rows(unlabelled)
    assert rows.count == 2 and rows.path == unlabelled
    (ids, x), = list(rows.read(16, (1, 2, 2)))
    assert ids == [1, 2] and x.tolist() == [[[[1, 2], [3, 4]]], [[[5, 6], [7, 8]]]]
    assert sources.image_rows(tmp_path / "photo.png") is None and sources.image_rows(Path(tmp_path)) is None
