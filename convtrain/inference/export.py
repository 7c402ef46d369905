"""Export a checkpoint's model (torch.export, TorchScript or ONNX), checking the outputs before it is kept.

The file is written under a temporary name next to the output, loaded back with the runtime that
will serve it, and compared with the checkpoint's own model on a batch of test images; only a file
that reproduces the outputs is renamed into place. A failure leaves whatever was at the output path
untouched.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path

import torch

from .. import atomic
from ..artifacts import checkpoint
from ..data.mnist import DATASETS, load_split
from ..errors import CheckpointError, ConfigError, ConvtrainError, DataError, ExportError

# torch-export first: TorchScript is deprecated upstream (kept for libtorch/C++ users).
FORMATS = {"torch-export": ".pt2", "torchscript": ".ts", "onnx": ".onnx"}
TOLERANCE = 1e-4  # float32 on the CPU: measured differences are 0 (torchscript, torch-export) to ~1e-6 (onnx)






def _test_batch(ckpt: checkpoint.Loaded, data_root: str | None, n: int = 16) -> tuple[torch.Tensor, str]:
    """A normalized batch of the checkpoint's test images, or a seeded random one when the data is absent."""
    norm = ckpt.normalizer("cpu")
    root = ckpt.data_root(data_root)
    try:
        if ckpt.dataset in DATASETS:
            test = load_split(ckpt.dataset, root, train=False, download=False)
            if tuple(test.images.shape[1:]) == ckpt.image_shape:
                idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:n]
                return norm(test.images[idx]), f"{n} {ckpt.dataset} test images"
    except DataError:
        pass
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, *ckpt.image_shape), generator=gen, dtype=torch.uint8)
    return norm(images), f"{n} random images ({ckpt.dataset} test set not found under {root})"


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


def _write_and_run(fmt: str, model: torch.nn.Module, batch: torch.Tensor, tmp: Path) -> torch.Tensor:
    """Write ``model`` as ``fmt`` to ``tmp``, load it back with its own runtime, return its outputs on ``batch``."""
    # a batch of 2, not 1, as the example: exporters would specialise a size-1 batch dimension
    dynamic = ({0: torch.export.Dim("batch")},)
    if fmt == "torch-export":
        program = torch.export.export(model, (batch[:2],), dynamic_shapes=dynamic)
        with open(tmp, "wb") as f:  # a file object: torch.export.save warns about names not ending in .pt2
            torch.export.save(program, f)
        with open(tmp, "rb") as f:
            loaded = torch.export.load(f).module()
        with torch.no_grad():
            return loaded(batch)
    if fmt == "torchscript":
        # TorchScript is deprecated upstream in favour of torch.export, but it is still what C++
        # (libtorch) and many serving stacks load; the warnings say nothing the user can act on.
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.trace(model, batch[:1]).save(str(tmp))
            return torch.jit.load(str(tmp))(batch)
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError:
        raise ExportError("ONNX export needs the optional packages: pip install 'convtrain[onnx]' "
                          "(onnx, onnxscript, onnxruntime)") from None
    with contextlib.redirect_stdout(sys.stderr):  # the exporter reports progress on stdout
        torch.onnx.export(model, (batch[:2],), str(tmp), input_names=["images"], output_names=["logits"],
                          dynamic_shapes=dynamic, verbose=False,
                          external_data=False)  # one self-contained file: a side .data file would name the temp file
    session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": batch.numpy()})[0])


def export_checkpoint(ckpt_path: str | Path, fmt: str = "torch-export", output: str | Path | None = None,
                      data_root: str | None = None, tolerance: float = TOLERANCE) -> dict:
    """Write the model as ``fmt`` and verify it: max |exported - checkpoint| on a test batch <= tolerance
    and the same predicted class for every image. Returns what was written and measured."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    ckpt = checkpoint.open_checkpoint(ckpt_path)
    path = output_path(Path(ckpt_path), fmt, output)
    model = ckpt.rebuild()
    batch, what = _test_batch(ckpt, data_root)
    with torch.inference_mode():
        expected = model(batch)
    try:
        with atomic.replacing(path) as tmp:
            diff, same = _export_to(tmp, fmt, model, batch, expected, what, ckpt.model_name, path, tolerance)
    except OSError as exc:  # the rename (or the fsync) of a verified export
        raise ExportError(f"could not write {path}: {exc.strerror or exc}") from None
    return {"path": str(path), "format": fmt, "max_abs_diff": diff, "checked_on": what, "same_predictions": same,
            "tolerance": tolerance}


def _export_to(tmp: Path, fmt: str, model, batch, expected, what: str, model_name: str, path: Path,
               tolerance: float) -> tuple[float, bool]:
    """Export into ``tmp`` and compare with ``expected``; any failure is an ExportError (tmp is then removed)."""
    try:  # find out now, in plain words, rather than deep inside an exporter
        tmp.open("wb").close()
    except OSError as exc:
        raise ExportError(f"could not write {path}: {exc.strerror or exc}") from None
    try:
        got = _write_and_run(fmt, model, batch, tmp)
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
