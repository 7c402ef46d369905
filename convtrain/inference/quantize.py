"""INT8 ONNX exports that prove their accuracy: ``convtrain export --format onnx --int8``.

The FP32 ONNX file is exported and checked against the checkpoint first (:mod:`.export`), then
quantized with onnxruntime. **Static** quantization, QDQ format: int8 weights per output channel,
uint8 activations whose ranges come from images of the run's own validation split (MinMax
calibration; never the test split, which scores the result). Static is what onnxruntime
recommends for CNNs: every convolution then runs on int8 inputs. Dynamic quantization (weights
only, activation ranges measured on every call) is the fallback where static cannot serve: when
the validation split cannot be rebuilt (its training images are not on this machine); it was 3x
slower than FP32 here, since its convolutions go through ConvInteger. The QOperator format was
refused too: on our AVX2 CPU (no VNNI) its uint8 x int8 kernels saturate and a 98.9% model fell
to 87.8%; QDQ lost nothing.

Both files are then scored on the test split with onnxruntime; the INT8 file is kept only when
its accuracy is at most ``max_drop`` points below FP32's, otherwise nothing is written
(:class:`~convtrain.errors.ExportError`, exit 1, one line with both numbers). What was measured
(sizes, accuracies, single-image and batch-64 latencies) is returned, and the file's metadata says
``precision: int8`` and which images calibrated it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from .. import atomic
from ..artifacts import checkpoint
from ..data.types import Split
from ..errors import ConfigError, DataError, ExportError
from . import export

MAX_DROP = 0.2  # points of test accuracy an INT8 file may lose against FP32 (export --max-drop)
CALIBRATION_IMAGES = 1000  # validation images that set the activation ranges; 500 and 2000 gave the same accuracy


def int8_path(ckpt_path: Path, output: str | Path | None) -> Path:
    """Where the INT8 file goes (default: next to the checkpoint, ``NAME.int8.onnx``), checked as any export."""
    return export.output_path(ckpt_path, "onnx", output or ckpt_path.with_suffix(".int8.onnx"))


def export_int8(ckpt_path: str | Path, output: str | Path | None = None, data_root: str | None = None,
                max_drop: float = MAX_DROP, include_preprocessing: bool = False) -> dict:
    """Export, quantize, score both on the test split, keep the INT8 file only within ``max_drop`` points.

    Returns the path, the quantization mode and calibration, and for ``fp32`` and ``int8`` each:
    ``bytes``, ``accuracy`` (percent), ``latency_1_ms`` and ``latency_64_ms`` (medians)."""
    if not max_drop >= 0:  # also refuses NaN
        raise ConfigError(f"--max-drop must be a number of accuracy points >= 0, got {max_drop}")
    export.require_onnx()
    ckpt_path = Path(ckpt_path)
    ckpt = checkpoint.open_checkpoint(ckpt_path)
    path = int8_path(ckpt_path, output)
    test = _split(ckpt, ckpt_path, data_root, "test")
    if test is None:
        raise DataError(f"an INT8 export is scored on {ckpt.dataset}'s test split, which was not found under "
                        f"{ckpt.data_root(data_root)}; give --data-root")
    val = _split(ckpt, ckpt_path, data_root, "val")
    feed = _feeder(ckpt, include_preprocessing)
    with tempfile.TemporaryDirectory(prefix="convtrain-int8-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        checked = export.export_checkpoint(ckpt_path, "onnx", fp32, data_root,
                                           include_preprocessing=include_preprocessing)
        int8 = Path(tmp) / "int8.onnx"
        calibration = _quantize(fp32, int8, val, feed, ckpt)
        _write_metadata(int8, {**checked["metadata"], "precision": "int8",
                               "quantization": calibration["mode"], "int8_calibration": json.dumps(calibration)})
        scores = {name: _score(p, test, feed) for name, p in (("fp32", fp32), ("int8", int8))}
        drop = scores["fp32"] - scores["int8"]
        if not drop <= max_drop:
            raise ExportError(f"INT8 refused: test accuracy {scores['int8']:.2f}% against FP32's {scores['fp32']:.2f}% "
                              f"(a drop of {drop:.2f} points > --max-drop {max_drop:g}); nothing written")
        latency = _latencies(fp32, int8, feed(test.images[:64]))
        sizes = {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size}
        try:
            with atomic.replacing(path) as out:
                shutil.copyfile(int8, out)
        except OSError as exc:
            raise ExportError(f"could not write {path}: {exc.strerror or exc}") from None
    return {"path": str(path), "mode": calibration["mode"], "calibration": calibration, "drop": drop,
            "max_drop": max_drop, "test_images": len(test),
            **{k: {"bytes": sizes[k], "accuracy": scores[k], **latency[k]} for k in ("fp32", "int8")}}


def _split(ckpt: checkpoint.Loaded, path: Path, data_root: str | None, split: str) -> Split | None:
    """The checkpoint's own ``split`` (val: the exact held-out images of its run), or None when its files
    are not on this machine."""
    from ..config.load import load_config
    from ..config.schema import held_out_seed, saved_raw
    from ..data import sources

    cfg = load_config(None, [], base=saved_raw(ckpt.config_dict()), where=f"{path} (saved config)")
    cfg.data.root, cfg.data.download = ckpt.data_root(data_root), False
    source = sources.find(cfg.data.name)
    try:
        if source is not None and source.registered:
            found = sources.build_eval(cfg.data, held_out_seed(cfg), split).test
        else:
            bundle = sources.build(cfg.data, held_out_seed(cfg))
            found = bundle.val if split == "val" else bundle.test
    except DataError:
        return None
    if not isinstance(found, Split) or len(found) == 0 or found.image_shape != ckpt.image_shape:
        return None
    return found


def _feeder(ckpt: checkpoint.Loaded, include_preprocessing: bool):
    """uint8 images -> the float32 numpy input the exported graph takes."""
    normalize = ckpt.normalizer("cpu")
    if include_preprocessing:
        return lambda images: (images.float() / 255).numpy()
    return lambda images: normalize(images).numpy()


def _quantize(fp32: Path, int8: Path, val: Split | None, feed, ckpt: checkpoint.Loaded) -> dict:
    """Static QDQ quantization calibrated on validation images; dynamic when there are none. Returns what
    the metadata records about it."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = fp32.with_name("prepared.onnx")
    with _quiet():  # the quantizer logs its progress and advice on stdout and through logging
        # shape inference and graph clean-up first, as onnxruntime advises before quantizing
        quant_pre_process(str(fp32), str(prepared))
        if val is None:
            quantize_dynamic(str(prepared), str(int8), weight_type=QuantType.QInt8, per_channel=True)
            return {"mode": "dynamic", "method": "none: activation ranges measured per call",
                    "why": f"the run's validation split of {ckpt.dataset} was not found, so no calibration images"}
        n = min(CALIBRATION_IMAGES, len(val))
        idx = torch.randperm(len(val), generator=torch.Generator().manual_seed(0))[:n]
        batches = [feed(val.images[idx[i:i + 100]]) for i in range(0, n, 100)]

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = iter({"images": b} for b in batches)

            def get_next(self):
                return next(self.it, None)

        quantize_static(str(prepared), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    return {"mode": "static", "format": "QDQ", "weights": "int8 per channel", "activations": "uint8",
            "method": "MinMax", "split": "val", "images": n, "dataset": ckpt.dataset,
            "split_seed": ckpt.config["data"].get("split_seed"), "sample_seed": 0}


@contextlib.contextmanager
def _quiet():
    import logging

    logging.disable(logging.WARNING)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            yield
    finally:
        logging.disable(logging.NOTSET)


def _write_metadata(path: Path, meta: dict) -> None:
    """Replace the file's metadata_props with ``meta`` (the quantizer keeps the FP32 file's, or drops them)."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def _session(path: Path):
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _score(path: Path, test: Split, feed) -> float:
    """Test accuracy in percent, with onnxruntime, in batches of 1000."""
    session = _session(path)
    correct = 0
    for i in range(0, len(test), 1000):
        logits = session.run(None, {"images": feed(test.images[i:i + 1000])})[0]
        correct += int((torch.from_numpy(logits).argmax(1) == test.labels[i:i + 1000]).sum())
    return 100.0 * correct / len(test)


def _latencies(fp32: Path, int8: Path, batch) -> dict:
    """Median milliseconds per call, one image and a batch of 64, both files measured in alternating
    rounds so that a change in the machine's load hits both alike."""
    sessions = {"fp32": _session(fp32), "int8": _session(int8)}
    times: dict[str, dict[str, list[float]]] = {k: {"latency_1_ms": [], "latency_64_ms": []} for k in sessions}
    for _ in range(5):
        for name, session in sessions.items():
            for key, x, n in (("latency_1_ms", batch[:1], 40), ("latency_64_ms", batch, 8)):
                session.run(None, {"images": x})  # warm
                for _ in range(n):
                    t = time.perf_counter()
                    session.run(None, {"images": x})
                    times[name][key].append((time.perf_counter() - t) * 1000)
    return {name: {key: statistics.median(v) for key, v in parts.items()} for name, parts in times.items()}
