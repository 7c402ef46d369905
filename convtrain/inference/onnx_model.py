"""An ``.onnx`` export as a model predict and serve use like a checkpoint: onnxruntime runs it, and its
metadata (written by ``convtrain export``) gives the classes, the normalization, the image shape and the dataset,
which decides the ink rule as it does for the checkpoint it came from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..extras import require_extra

NEEDED = ("classes", "mean", "std", "input_size", "channels", "dataset", "model")


class OnnxModule(nn.Module):
    """The export behind the model interface: takes the normalized batch the Predictor gives a checkpoint's
    model; an export that normalizes itself (``includes_preprocessing``) gets pixels / 255 back."""

    def __init__(self, session: Any, mean: list[float], std: list[float], preprocessing: bool) -> None:
        super().__init__()
        self.session, self.input = session, session.get_inputs()[0].name
        self.preprocessing = preprocessing
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preprocessing:
            x = x * self.std + self.mean
        out = self.session.run(None, {self.input: x.detach().float().cpu().contiguous().numpy()})[0]
        return torch.from_numpy(out).to(x.device)


def open_onnx(path: Path) -> dict:
    """The fields of a LoadedModel for the export at ``path``; one CheckpointError when it cannot serve."""
    ort = require_extra("onnx", f"reading {path.name}", "onnxruntime", "onnxruntime")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types: any failure means the file is not usable
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable ONNX model ({first[:200]})") from None
    meta = dict(session.get_modelmeta().custom_metadata_map)
    missing = [k for k in NEEDED if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: an ONNX model without convtrain's metadata ({', '.join(missing)} missing); "
                              "export it with: convtrain export --checkpoint RUN --format onnx")
    try:
        classes, mean, std = json.loads(meta["classes"]), json.loads(meta["mean"]), json.loads(meta["std"])
        h, w = json.loads(meta["input_size"])
        channels, preprocessing = int(meta["channels"]), json.loads(meta.get("includes_preprocessing", "false"))
        # a calibrated checkpoint's temperature: folded into the graph with the preprocessing, else applied here
        temperature = 1.0 if preprocessing else float(meta.get("temperature", "1"))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: unreadable convtrain metadata ({exc})") from None
    return {"model": OnnxModule(session, mean, std, bool(preprocessing)).eval(), "classes": [str(c) for c in classes],
            "model_name": meta["model"], "dataset": meta["dataset"], "image_shape": (channels, int(h), int(w)),
            "mean": tuple(mean), "std": tuple(std), "epoch": 0, "config": {}, "path": path, "temperature": temperature}


class OnnxExport:
    """The export read as ``eval`` reads a checkpoint (what :class:`convtrain.artifacts.checkpoint.Loaded`
    offers there): its metadata, and for data settings the schema defaults for its dataset, since an export
    carries no run config (no held-out validation split, no own-data root)."""

    def __init__(self, path: Path) -> None:
        from ..config.load import load_config
        from ..config.schema import to_dict

        fields = open_onnx(path)
        self.path, self.model = path, fields["model"]
        self.classes, self.model_name, self.dataset = tuple(fields["classes"]), fields["model_name"], fields["dataset"]
        self.image_shape, self.mean, self.std = fields["image_shape"], fields["mean"], fields["std"]
        self.in_channels, self.input_size = self.image_shape[0], self.image_shape[1:]
        self.num_classes, self.epoch, self.temperature = len(self.classes), 0, fields["temperature"]
        self.config = to_dict(load_config(None, []))
        self.config["data"]["name"] = self.dataset

    def rebuild(self) -> nn.Module:
        return self.model

    def normalizer(self, device: torch.device | str = "cpu"):
        from ..data.batches import Normalizer

        return Normalizer(list(self.mean), list(self.std), torch.device(device))

    def config_dict(self) -> dict:
        return json.loads(json.dumps(self.config))

    def data_root(self, override: str | None = None) -> str | None:
        from ..data.detect import data_root_from_env

        return override or data_root_from_env(self.config["data"]["root"])
