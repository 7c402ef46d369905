"""``convtrain visualize``: PNG grids of the first conv layer's kernels and of every conv layer's
feature maps for one image (a test image of the checkpoint's dataset by default).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .. import ops
from ..artifacts import checkpoint
from ..artifacts.plots import _grid
from ..data.sources import find as find_source
from ..errors import CheckpointError, ConfigError, ConvtrainError, DataError, OutputError

CONV_TYPES = (nn.Conv2d, ops.Conv2d)




def default_visualize_dir(ckpt_path: Path) -> Path:
    """``RUN/visualize`` for a checkpoint inside a run (RUN/checkpoints/X.pt next to RUN/config.yaml);
    otherwise ``<stem>-visualize/`` next to the checkpoint, so nothing outside its folder is touched."""
    ckpt_path = Path(ckpt_path)
    run = ckpt_path.parent.parent
    if ckpt_path.parent.name == "checkpoints" and (run / "config.yaml").is_file():
        return run / "visualize"
    return ckpt_path.parent / f"{ckpt_path.stem}-visualize"


def prepare_output_dir(out: Path) -> Path:
    """Create ``out`` (not its parents): a missing parent or a file in the way is a ConfigError (exit 2)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"the output folder {out} is a file; give a folder with --output-dir")
    if not out.parent.is_dir():
        raise ConfigError(f"the output folder's parent {out.parent} does not exist; create it first")
    try:
        out.mkdir(exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK):
        raise OutputError(f"cannot write into the output folder {out}: permission denied")
    return out


def _feature_maps(model: nn.Module, convs: list[tuple[str, nn.Module]], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every conv layer's output for one normalized image ``[1, C, H, W]``."""
    captured: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, name=name: captured.__setitem__(name, o.detach()))
             for name, m in convs]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return captured


def _first_own_test_image(ckpt: checkpoint.Loaded, ckpt_path) -> torch.Tensor:
    """The first test image of the user's files a checkpoint was trained on (its saved config: the same
    held-out split), or a DataError saying what is needed."""
    from ..config.schema import from_dict, held_out_seed, saved_raw
    from ..data.batches import SplitDataset
    from ..data.sources import build as build_data
    from ..data.types import StreamedSplit

    cfg = from_dict(saved_raw(ckpt.config_dict()), f"{ckpt_path} (saved config)")
    try:
        bundle = build_data(cfg.data, held_out_seed(cfg))
    except ConvtrainError as exc:
        raise DataError(f"visualize takes the first test image of the training data {cfg.data.root}, which "
                        f"cannot be read here ({exc}); pass an IMAGE file") from None
    test, mean, std = bundle.test, list(ckpt.mean), list(ckpt.std)
    x = (test.dataset(mean, std) if isinstance(test, StreamedSplit) else SplitDataset(test, mean, std)).pixels(0)
    if tuple(x.shape) != ckpt.image_shape:
        raise CheckpointError(f"{ckpt_path} expects images of shape {list(ckpt.image_shape)}, {cfg.data.root} is "
                              f"decoded as {list(x.shape)}; pass an IMAGE file")
    return x


def _first_registered_test_image(ckpt: checkpoint.Loaded, ckpt_path, source, data_root: str | None) -> torch.Tensor:
    """The first test image of a registered dataset, found under the data root."""
    from ..config.schema import DataConfig

    if source is None:
        raise DataError(f"dataset '{ckpt.dataset}' of {ckpt_path} is not registered here; pass an IMAGE file")
    try:
        data = DataConfig(name=ckpt.dataset, root=ckpt.data_root(data_root), download=False)
        test = source.build_eval(data, 0, "test").test
    except DataError as exc:
        raise DataError(f"{exc} (or pass an IMAGE file)") from None
    x = test.images[0]
    if tuple(x.shape) != ckpt.image_shape:
        raise CheckpointError(f"{ckpt_path} expects images of shape {list(ckpt.image_shape)}, "
                              f"dataset '{ckpt.dataset}' has {list(x.shape)}; pass an IMAGE file")
    return x


def visualize(ckpt_path: str | Path, image: str | Path | None = None, output_dir: str | Path | None = None,
              data_root: str | None = None, invert: str = "auto") -> list[Path]:
    """PNG grids of the first conv layer's kernels and of every conv layer's feature maps for one image.

    The image is a file, or by default the first image of the checkpoint's test set. Files go to
    ``output_dir`` (default: :func:`default_visualize_dir`). Everything is computed before the
    folder is created, so a failure writes nothing.
    """
    from ..data.images import check_invert, image_to_input

    check_invert(invert)
    ckpt = checkpoint.open_checkpoint(ckpt_path)
    model = ckpt.rebuild()
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, CONV_TYPES)]
    if not convs:
        raise ConvtrainError(f"model '{ckpt.model_name}' has no conv layers to visualize")
    source = find_source(ckpt.dataset)
    if image is not None:
        x = image_to_input(Path(image), ckpt.in_channels, ckpt.input_size, invert)
    elif source is not None and not source.registered:
        x = _first_own_test_image(ckpt, ckpt_path)
    else:
        x = _first_registered_test_image(ckpt, ckpt_path, source, data_root)
    captured = _feature_maps(model, convs, ckpt.normalizer("cpu")(x.unsqueeze(0)))
    out = prepare_output_dir(Path(output_dir) if output_dir else default_visualize_dir(Path(ckpt_path)))
    kernels = convs[0][1].weight.detach().float()
    written = [_grid(kernels.mean(1) if kernels.shape[1] > 1 else kernels[:, 0], 8, out / "kernels.png")]
    for name, _ in convs:
        fmap = captured[name][0]
        scale = max(1, 28 // fmap.shape[-1])  # small maps are enlarged so they stay visible
        written.append(_grid(fmap, scale, out / f"featuremaps_{name.replace('.', '_')}.png"))
    return written
