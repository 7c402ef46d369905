"""Export a checkpoint's model to TorchScript or ONNX, checking the outputs at export time."""

from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path

import torch

from . import checkpoint, data
from .errors import ConfigError, ConvtrainError, DataError

FORMATS = ("torchscript", "onnx")


class ExportMismatch(ConvtrainError):
    """The exported model does not reproduce the checkpoint's outputs."""


def _test_batch(ckpt: dict, data_root: str | None, n: int = 16) -> tuple[torch.Tensor, str]:
    """A normalized batch of the checkpoint's test images, or a seeded random one when the data is absent."""
    norm = data.Normalizer(ckpt["normalization"]["mean"], ckpt["normalization"]["std"], torch.device("cpu"))
    root = data_root or data.data_root_from_env(ckpt["config"]["data"]["root"])
    try:
        test = data.load_split(ckpt["dataset"], root, train=False, download=False)
        idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:n]
        return norm(test.images[idx]), f"{n} {ckpt['dataset']} test images"
    except DataError:
        gen = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (n, ckpt["in_channels"], *ckpt["input_size"]), generator=gen, dtype=torch.uint8)
        return norm(images), f"{n} random images (dataset not found under {root})"


def export_checkpoint(ckpt_path: str | Path, fmt: str, output: str | Path | None = None,
                      data_root: str | None = None, tolerance: float = 1e-4) -> dict:
    """Write the model as ``fmt`` and verify it: max |exported - checkpoint| on a test batch <= tolerance."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    ckpt = checkpoint.load(ckpt_path)
    model = checkpoint.rebuild_model(ckpt, ckpt_path).eval()
    path = Path(output) if output else Path(ckpt_path).with_suffix(".ts" if fmt == "torchscript" else ".onnx")
    batch, what = _test_batch(ckpt, data_root)
    with torch.inference_mode():
        expected = model(batch)
    if fmt == "torchscript":
        # TorchScript is deprecated upstream in favour of torch.export, but it is still what C++
        # (libtorch) and many serving stacks load; the warnings say nothing the user can act on.
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.trace(model, batch[:1]).save(str(path))
            got = torch.jit.load(str(path))(batch)
    else:
        try:
            import onnx  # noqa: F401
            import onnxruntime
        except ImportError:
            raise ConvtrainError("ONNX export needs the optional packages: pip install 'convtrain[onnx]' "
                                 "(onnx, onnxscript, onnxruntime)") from None
        # a batch of 2, not 1, as the example: the exporter would specialise a size-1 dimension
        with contextlib.redirect_stdout(sys.stderr):  # the exporter reports progress on stdout
            torch.onnx.export(model, (batch[:2],), str(path), input_names=["images"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"images": batch.numpy()})[0])
    diff = float((got - expected).abs().max())
    if diff > tolerance:
        path.unlink(missing_ok=True)
        raise ExportMismatch(f"exported {fmt} model differs from the checkpoint by {diff:.3g} on {what}; not written")
    return {"path": str(path), "format": fmt, "max_abs_diff": diff, "checked_on": what,
            "same_predictions": bool((got.argmax(1) == expected.argmax(1)).all())}
