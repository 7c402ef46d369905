"""Property tests: random configs, --set strings, checkpoints and run directories through the CLI.

Property (the error contract): no exception escapes the command (a user would see a traceback, or
the backstop's "internal error"), the exit code is 0, 1 or 2, and a failure prints exactly one
stderr line starting "error: ". Hypothesis runs derandomized with a bounded number of examples
(settings in one place below), so the suite is repeatable and stays within about a minute.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import struct
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convtrain import config as config_mod
from convtrain.artifacts.metrics import COLUMNS

from ..conftest import REPO
from .kit import digit_png, invoke, stderr_lines, valid_checkpoint

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
SLOW_FUZZ = settings(FUZZ, max_examples=25)  # properties whose every example runs a model


def keeps_contract(argv: list[str]) -> None:
    out = invoke(argv)
    problems = []
    if out.crashed:
        problems.append("uncaught exception:\n" + out.crashed[-1500:])
    if out.code not in (0, 1, 2):
        problems.append(f"exit code {out.code}")
    if "Traceback" in out.stdout + out.stderr:
        problems.append("traceback printed")
    lines = stderr_lines(out.stderr)
    if out.code != 0 and (len(lines) != 1 or not lines[0].startswith("error: ") or "internal error" in lines[0]):
        problems.append(f"stderr is not one 'error: ' line: {out.stderr[-500:]!r}")
    assert not problems, f"{argv}: " + "; ".join(problems)


# ----------------------------------------------------------------------------------------------
# (a) random config mappings -> config show

SCHEMA_KEYS = [row[0] for row in config_mod.schema_rows()]
KEY_WORDS = sorted({part for key in SCHEMA_KEYS for part in key.split(".")} | {"kwargs", "hidden", "conv"})

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-2**80, max_value=2**80),
                    st.floats(), st.text(max_size=12), st.sampled_from(["mnist", "adam", "cosine", "auto", "cpu"]))
keys = st.one_of(st.sampled_from(KEY_WORDS), st.text(min_size=1, max_size=8))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                      max_leaves=15)
# mostly shaped like the schema (sections of known fields), sometimes anything at all
sections = st.dictionaries(st.sampled_from(KEY_WORDS), st.one_of(
    st.dictionaries(st.sampled_from(KEY_WORDS), values, max_size=5), values), max_size=6)
config_maps = st.one_of(sections, st.dictionaries(keys, values, max_size=5), values)


@FUZZ
@given(raw=config_maps)
def test_random_config_files(raw, tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    keeps_contract(["config", "show", "-c", str(path)])


# ----------------------------------------------------------------------------------------------
# (b) random --set strings -> config show

set_values = st.one_of(st.text(max_size=15), scalars.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()
                                                         .removesuffix("...").strip()),
                       st.sampled_from(["[1", "{a: 1}", "[0.1, 0.2, 0.3]", ".nan", "-.inf", "1e400", "!!python/name:os.system",
                                        "&a [*a]", "1.0e400", "0x10", "~", "''"]))
set_keys = st.one_of(st.sampled_from(SCHEMA_KEYS), st.sampled_from(SCHEMA_KEYS).map(lambda k: k + ".x"),
                     st.lists(st.sampled_from(KEY_WORDS), min_size=1, max_size=5).map(".".join), st.text(max_size=10))
set_strings = st.one_of(st.tuples(set_keys, set_values).map("=".join), st.text(max_size=20))


@FUZZ
@given(sets=st.lists(set_strings, min_size=1, max_size=3))
def test_random_set_strings(sets):
    keeps_contract(["config", "show", *[f"--set={s}" for s in sets]])


# ----------------------------------------------------------------------------------------------
# (c) random checkpoint dicts -> eval and predict

def _idx(kind: int, dims: tuple[int, ...], data: bytes) -> bytes:
    return struct.pack(">HBB", 0, kind, len(dims)) + b"".join(struct.pack(">I", d) for d in dims) + data


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory) -> Path:
    """A 64-image MNIST in torchvision's layout, so every eval example takes milliseconds."""
    root = tmp_path_factory.mktemp("tiny-mnist")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for prefix, n in (("train", 64), ("t10k", 64)):
        images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(_idx(8, (n, 28, 28), images.numpy().tobytes()))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx(8, (n,), bytes(i % 10 for i in range(n))))
    return root


@pytest.fixture(scope="module")
def base_ckpt() -> dict:
    return valid_checkpoint()


def _paths(node, prefix=()) -> list[tuple]:
    """Every key path into a checkpoint's dicts and lists (not into tensors)."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        out.append(prefix + (k,))
        if k != "state_dict":  # its tensors are replaced whole, not entered
            out.extend(_paths(v, prefix + (k,)))
    return out


random_values = st.one_of(values, st.builds(lambda shape: torch.zeros(shape), st.lists(st.integers(0, 3), max_size=3)))


@st.composite
def mutated_checkpoints(draw, base):
    c = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(c)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = c
        for k in path[:-1]:
            parent = parent[k]
        how = draw(st.sampled_from(["delete", "replace", "shorten"]))
        if how == "delete":
            del parent[path[-1]]
        elif how == "shorten" and isinstance(parent[path[-1]], (list, str)):
            parent[path[-1]] = parent[path[-1]][: draw(st.integers(0, 2))]
        else:
            parent[path[-1]] = draw(random_values)
    return c


def _saved(ckpt: dict) -> str:
    f = tempfile.NamedTemporaryFile(suffix=".pt", delete=False)
    torch.save(ckpt, f)
    f.close()
    return f.name


@SLOW_FUZZ
@given(data=st.data())
def test_random_checkpoints_eval(data, base_ckpt, tiny_mnist):
    path = _saved(data.draw(mutated_checkpoints(base_ckpt)))
    try:
        keeps_contract(["eval", "--checkpoint", path, "--device", "cpu", "--data-root", str(tiny_mnist)])
    finally:
        Path(path).unlink()


@SLOW_FUZZ
@given(data=st.data())
def test_random_checkpoints_predict(data, base_ckpt, digit):
    path = _saved(data.draw(mutated_checkpoints(base_ckpt)))
    try:
        keeps_contract(["predict", "--checkpoint", path, "--device", "cpu", str(digit)])
    finally:
        Path(path).unlink()


@pytest.fixture(scope="module")
def digit(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "digit.png"
    path.write_bytes(digit_png())
    return path


# ----------------------------------------------------------------------------------------------
# (d) random run-directory files -> runs and plot

def _valid_run_files() -> dict[str, bytes]:
    cfg = config_mod.to_yaml(config_mod.load_config(REPO / "configs" / "smoke.yaml"))
    rows = io.StringIO()
    writer = csv.DictWriter(rows, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for epoch in (1, 2):
        writer.writerow({c: "0.5" for c in COLUMNS} | {"epoch": str(epoch)})
    results = {"status": "finished", "best_epoch": 2, "best_val_acc": 0.5, "test_accuracy": 0.5, "test_loss": 1.0,
               "test_confusion_matrix": [[1, 0], [0, 1]], "classes": ["a", "b"], "epochs": 2}
    return {"config.yaml": cfg.encode(), "metrics.csv": rows.getvalue().encode(), "results.json": json.dumps(results).encode()}


VALID_RUN = _valid_run_files()
json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
csv_cells = st.one_of(st.text(max_size=6), st.floats().map(str), st.integers().map(str), st.just(""))


@st.composite
def run_file(draw, name: str):
    """The file's content (bytes), None to leave it out, or "DIR" to put a folder in its place."""
    kind = draw(st.sampled_from(["valid", "bytes", "missing", "dir", "structured", "truncated"]))
    if kind == "valid":
        return VALID_RUN[name]
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "missing":
        return None
    if kind == "dir":
        return "DIR"
    if kind == "truncated":
        return VALID_RUN[name][: draw(st.integers(0, len(VALID_RUN[name])))]
    if name == "results.json":
        base = json.loads(VALID_RUN[name])
        return json.dumps(draw(st.one_of(json_values, st.fixed_dictionaries(
            {}, optional={k: json_values for k in base})))).encode()
    if name == "config.yaml":
        return yaml.safe_dump(draw(config_maps)).encode()
    header = draw(st.one_of(st.just(list(COLUMNS)), st.lists(st.sampled_from(COLUMNS), max_size=5)))
    lines = [",".join(header)] + [",".join(draw(st.lists(csv_cells, max_size=len(header) + 1))) for _ in range(draw(st.integers(0, 3)))]
    return "\n".join(lines).encode()


@st.composite
def run_dirs(draw):
    return {name: draw(run_file(name)) for name in VALID_RUN}


def _write_run(folder: Path, files: dict) -> Path:
    run = folder / "r1"
    (run / "checkpoints").mkdir(parents=True)
    for name, content in files.items():
        if content == "DIR":
            (run / name).mkdir()
        elif content is not None:
            (run / name).write_bytes(content)
    return run


@FUZZ
@given(files=run_dirs(), as_json=st.booleans())
def test_random_run_dirs_runs(files, as_json):
    with tempfile.TemporaryDirectory() as tmp:
        run = _write_run(Path(tmp), files)
        keeps_contract(["runs", *(["--json"] if as_json else []), str(run.parent)])


@SLOW_FUZZ
@given(files=run_dirs())
def test_random_run_dirs_plot(files):
    with tempfile.TemporaryDirectory() as tmp:
        run = _write_run(Path(tmp), files)
        keeps_contract(["plot", str(run)])
