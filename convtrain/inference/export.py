"""Export a checkpoint's model (torch.export, TorchScript or ONNX), checking the outputs before it is kept.

The file is written under a temporary name next to the output, loaded back with the runtime that
will serve it, and compared with the checkpoint's own model on a batch of test images; only a file
that reproduces the outputs is renamed into place. A failure leaves whatever was at the output path
untouched.

Every file carries what a user needs to feed it (:func:`metadata`): class names, mean/std, input
size, channels, layout and value range, the model and the convtrain version. ONNX keeps them as
the model's ``metadata_props`` (onnxruntime: ``session.get_modelmeta().custom_metadata_map``);
torch.export and TorchScript as an extra file ``convtrain.json`` in the archive
(``torch.export.load(path, extra_files={"convtrain.json": ""})``). With ``preprocessing=True`` the
normalization is part of the exported graph: it takes pixels scaled to 0..1; so is a calibrated
checkpoint's temperature (its outputs are then logits / T, whose softmax is the calibrated
probabilities); without it the file gives the raw logits and its metadata's ``temperature`` says what to
divide them by.
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from pathlib import Path

import torch

from .. import atomic
from ..artifacts import checkpoint
from ..data.sources import find as find_source
from ..errors import CheckpointError, ConfigError, ConvtrainError, DataError, ExportError
from ..extras import require_extra
from .predict import mnist_style
from ..version import __version__

# torch-export first: TorchScript is deprecated upstream (kept for libtorch/C++ users).
FORMATS = {"torch-export": ".pt2", "torchscript": ".ts", "onnx": ".onnx"}
TOLERANCE = 1e-4  # float32 on the CPU: measured differences are 0 (torchscript, torch-export) to ~1e-6 (onnx)
EXTRA_FILE = "convtrain.json"  # torch-export / torchscript: the metadata inside the archive


def metadata(ckpt: checkpoint.Loaded, preprocessing: bool) -> dict[str, str]:
    """What the exported file says about itself: string keys and values (ONNX's metadata_props); lists
    are JSON. ``input`` says what to feed: normalized pixels, or (``preprocessing``) pixels/255."""
    mean, std = [round(v, 6) for v in ckpt.mean], [round(v, 6) for v in ckpt.std]
    how = ("float32 pixels / 255 (0..1); the graph normalizes them with mean/std" if preprocessing else
           "float32 (pixels / 255 - mean) / std per channel")
    t = ckpt.temperature
    outputs = ("logits / temperature (softmax gives the calibrated probabilities)" if preprocessing and t != 1.0 else
               "logits; probabilities are softmax(logits / temperature)")
    return {"classes": json.dumps(list(ckpt.classes)), "mean": json.dumps(mean), "std": json.dumps(std),
            "input_size": json.dumps(list(ckpt.input_size)), "channels": str(ckpt.in_channels),
            "layout": "NCHW", "color": "grayscale" if ckpt.in_channels == 1 else "RGB",
            "includes_preprocessing": json.dumps(preprocessing), "input": how,
            "ink": "light on dark (MNIST-style)" if mnist_style(ckpt.dataset) else "as in the training images",
            "model": ckpt.model_name, "dataset": ckpt.dataset, "convtrain_version": __version__,
            "temperature": repr(float(t)), "output": outputs}


class WithPreprocessing(torch.nn.Module):
    """``model`` behind its normalization: takes pixels / 255 (0..1), as image libraries give them; its
    logits divided by ``temperature`` (a calibrated checkpoint's; 1.0 leaves them as they are)."""

    def __init__(self, model: torch.nn.Module, mean, std, temperature: float = 1.0) -> None:
        super().__init__()
        self.model, self.temperature = model, float(temperature)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model((x - self.mean) / self.std)
        return logits if self.temperature == 1.0 else logits / self.temperature


def _test_batch(ckpt: checkpoint.Loaded, data_root: str | None, n: int = 16) -> tuple[torch.Tensor, str]:
    """A uint8 batch of a registered dataset's test images, or a seeded random one when the data is absent
    (or is the user's own files, which may take long to decode)."""
    from ..config.schema import DataConfig

    root = ckpt.data_root(data_root)
    source = find_source(ckpt.dataset)
    try:
        if source is not None and source.registered:
            test = source.build_eval(DataConfig(name=ckpt.dataset, root=root, download=False), 0, "test").test
            if tuple(test.images.shape[1:]) == ckpt.image_shape:
                idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:n]
                return test.images[idx], f"{n} {ckpt.dataset} test images"
    except DataError:
        pass
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, *ckpt.image_shape), generator=gen, dtype=torch.uint8)
    return images, f"{n} random images ({ckpt.dataset} test set not found under {root})"


def _is_checkpoint(path: Path) -> bool:
    try:
        checkpoint.load(path)
        return True
    except CheckpointError as exc:
        # a file that only fails validation is still somebody's checkpoint: never overwrite it
        return not str(exc).startswith((f"{path} is truncated", f"{path} is not a convtrain"))


def output_path(ckpt_path: Path, fmt: str, output: str | Path | None) -> Path:
    """Where the export goes; ConfigError (exit 2) for a path that would destroy or cannot hold it."""
    path = Path(output) if output else ckpt_path.with_suffix(FORMATS[fmt])
    if path.exists() and ckpt_path.exists() and path.resolve() == ckpt_path.resolve():
        raise ConfigError(f"the output {path} is the checkpoint itself; give another --output")
    if path.is_dir():
        raise ConfigError(f"the output {path} is a directory; give a file name, e.g. {path / ('model' + FORMATS[fmt])}")
    if not path.parent.is_dir():
        raise ConfigError(f"the output folder {path.parent} does not exist; create it first")
    if path.is_file() and _is_checkpoint(path):
        raise ConfigError(f"the output {path} is a convtrain checkpoint; refusing to overwrite it, "
                          "give another --output")
    return path


def _write_and_run(fmt: str, model: torch.nn.Module, batch: torch.Tensor, tmp: Path, meta: dict) -> torch.Tensor:
    """Write ``model`` as ``fmt`` to ``tmp`` with ``meta``, load it back with its own runtime (the metadata
    included), return its outputs on ``batch``."""
    # a batch of 2, not 1, as the example: exporters would specialise a size-1 batch dimension
    dynamic = ({0: torch.export.Dim("batch")},)
    extra = {EXTRA_FILE: json.dumps(meta)}
    if fmt == "torch-export":
        program = torch.export.export(model, (batch[:2],), dynamic_shapes=dynamic)
        with open(tmp, "wb") as f:  # a file object: torch.export.save warns about names not ending in .pt2
            torch.export.save(program, f, extra_files=extra)
        found = {EXTRA_FILE: ""}
        with open(tmp, "rb") as f:
            loaded = torch.export.load(f, extra_files=found).module()
        _check_meta(json.loads(found[EXTRA_FILE] or "{}"), meta)
        with torch.no_grad():
            return loaded(batch)
    if fmt == "torchscript":
        # TorchScript is deprecated upstream in favour of torch.export, but it is still what C++
        # (libtorch) and many serving stacks load; the warnings say nothing the user can act on.
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.trace(model, batch[:1]).save(str(tmp), _extra_files=extra)
            found = {EXTRA_FILE: ""}
            loaded = torch.jit.load(str(tmp), _extra_files=found)
            _check_meta(json.loads(found[EXTRA_FILE] or "{}"), meta)
            return loaded(batch)
    onnx = require_onnx()
    import onnxruntime
    with contextlib.redirect_stdout(sys.stderr):  # the exporter reports progress on stdout
        torch.onnx.export(model, (batch[:2],), str(tmp), input_names=["images"], output_names=["logits"],
                          dynamic_shapes=dynamic, verbose=False,
                          external_data=False)  # one self-contained file: a side .data file would name the temp file
    proto = onnx.load(str(tmp))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(tmp))
    session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    _check_meta(dict(session.get_modelmeta().custom_metadata_map), meta)
    return torch.from_numpy(session.run(None, {"images": batch.numpy()})[0])


def require_onnx():
    """The ``onnx`` module; onnxscript (the exporter) and onnxruntime (the check) must import too."""
    return require_extra("onnx", "export --format onnx", "onnx, onnxscript and onnxruntime",
                         "onnx", "onnxscript", "onnxruntime")


def _check_meta(found: dict, meta: dict) -> None:
    if found != meta:
        raise ExportError(f"the exported file's metadata did not read back ({len(found)} of {len(meta)} keys)")


def export_checkpoint(ckpt_path: str | Path, fmt: str = "torch-export", output: str | Path | None = None,
                      data_root: str | None = None, tolerance: float = TOLERANCE,
                      include_preprocessing: bool = False) -> dict:
    """Write the model as ``fmt`` with its :func:`metadata` and verify it: max |exported - checkpoint| on a
    test batch <= tolerance and the same predicted class for every image. Returns what was written and
    measured. ``include_preprocessing``: the exported graph normalizes (it takes pixels / 255)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    if fmt == "onnx":
        require_onnx()  # before the checkpoint is even read: nothing runs without the exporter
    ckpt = checkpoint.open_checkpoint(ckpt_path)
    path = output_path(Path(ckpt_path), fmt, output)
    model = ckpt.rebuild()
    images, what = _test_batch(ckpt, data_root)
    with torch.inference_mode():
        expected = model(ckpt.normalizer("cpu")(images))
    if include_preprocessing:
        model, batch = WithPreprocessing(model, ckpt.mean, ckpt.std, ckpt.temperature).eval(), images.float() / 255
        expected = expected / ckpt.temperature  # the folded temperature: what the file must reproduce
    else:
        batch = ckpt.normalizer("cpu")(images)
    meta = metadata(ckpt, include_preprocessing)
    try:
        with atomic.replacing(path) as tmp:
            diff, same = _export_to(tmp, fmt, model, batch, expected, what, ckpt.model_name, path, tolerance, meta)
    except OSError as exc:  # the rename (or the fsync) of a verified export
        raise ExportError(f"could not write {path}: {exc.strerror or exc}") from None
    return {"path": str(path), "format": fmt, "max_abs_diff": diff, "checked_on": what, "same_predictions": same,
            "tolerance": tolerance, "metadata": meta}


def _export_to(tmp: Path, fmt: str, model, batch, expected, what: str, model_name: str, path: Path,
               tolerance: float, meta: dict) -> tuple[float, bool]:
    """Export into ``tmp`` and compare with ``expected``; any failure is an ExportError (tmp is then removed)."""
    try:  # find out now, in plain words, rather than deep inside an exporter
        tmp.open("wb").close()
    except OSError as exc:
        raise ExportError(f"could not write {path}: {exc.strerror or exc}") from None
    try:
        got = _write_and_run(fmt, model, batch, tmp, meta)
    except ConvtrainError:
        raise
    except OSError as exc:
        raise ExportError(f"could not write {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # exporters fail with many exception types; the first line says why
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"could not export model '{model_name}' to {fmt}: {first}") from None
    diff = float((got - expected).abs().max())
    same = bool((got.argmax(1) == expected.argmax(1)).all())
    if not diff <= tolerance or not same:  # `not <=` also catches NaN
        raise ExportError(f"exported {fmt} model differs from the checkpoint by {diff:.3g} on {what} "
                          f"(tolerance {tolerance:g}, same predictions: {same}); nothing written")
    return diff, same
