"""What makes `convtrain train --config speedrun` fast, held by tests rather than timings.

- the recipe loads with the model and settings its measurements were made with (docs/results.md);
- a whole run imports nothing it does not use: not torch._dynamo (every torch.optim optimizer
  imports it on first use: 1.1-1.5 s of CPU here, as much as torch itself; convtrain's optimizers
  call torch's functions past that import), not matplotlib (the recipe draws no plots), not
  torchvision, sympy or onnx.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from convtrain.config.load import load_config

from ..conftest import REPO

# modules a training run must not import, and why each one costs
NOT_IMPORTED = {
    "torch._dynamo": "imported by torch.optim's wrappers on first use (1.1-1.5 s CPU)",
    "torch._inductor": "torch.compile's code generator",
    "sympy": "torch._dynamo's symbolic shapes",
    "matplotlib": "the plots (log.plots is off in the recipe)",
    "torchvision": "a dataset/transform library convtrain's MNIST reader does not need",
    "onnx": "exports only",
    "onnxruntime": "exports only",
}

# the console script's main() with a report of sys.modules once the command has finished (atexit
# handlers run before the CLI's os._exit)
_PROBE = """
import atexit, json, sys
atexit.register(lambda: print("MODULES " + json.dumps(sorted(sys.modules)), file=sys.stderr))
from convtrain.cli import main
sys.argv = ["convtrain", *sys.argv[1:]]
main()
"""


def test_speedrun_recipe_loads_the_model_and_settings_it_was_measured_with():
    """Breaks tried: speedrun.yaml's conv1 stride back to 1 (the pooled 24x24 map, ~25% more time);
    batch 64 (twice the steps); plots on; test_every_epoch off (a second test pass): each fails here."""
    from convtrain.models import create_model

    cfg = load_config("speedrun", [])
    assert cfg.model.name == "fast_cnn"
    assert cfg.model.kwargs == {"width1": 16, "hidden": 128, "stride1": 2}
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.label_smoothing) == (1, 128, 0.1)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.betas) == ("adam", 0.01, [0.7, 0.9])
    assert (cfg.sched.name, cfg.sched.pct_start) == ("onecycle", 0.3)
    assert cfg.train.test_every_epoch and not cfg.log.plots and cfg.speed.channels_last and not cfg.speed.compile
    model = create_model(cfg.model.name, num_classes=10, **cfg.model.kwargs)
    names = [n for n, _ in model.backbone.named_children()]
    assert names == ["conv1", "relu1", "conv2", "pool2", "relu2", "flatten", "fc1", "relu3"]  # no pool1
    assert model.backbone.conv1.stride == (2, 2) and model.backbone.conv1.out_channels == 16
    assert sum(p.numel() for p in model.parameters()) == 108_874


@pytest.mark.slow
def test_a_speedrun_run_imports_nothing_it_does_not_use(data_root, tmp_path):
    """Breaks tried: build_optimizer back on torch.optim.Adam (torch._dynamo, sympy appear); log.plots on
    in speedrun.yaml (matplotlib appears); the MNIST reader through torchvision.datasets (torchvision
    appears): each fails here."""
    args = ["train", "--config", "speedrun", "--set", "data.train_subset=512", "--set", "data.val_size=128",
            "--set", "data.test_subset=128", "--device", "cpu", "--run-dir", str(tmp_path / "run")]
    result = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, cwd=REPO,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stderr.splitlines() if x.startswith("MODULES "))
    modules = json.loads(line[len("MODULES "):])
    found = {m: why for m, why in NOT_IMPORTED.items() if any(x == m or x.startswith(m + ".") for x in modules)}
    assert not found, f"imported by a speedrun run: {found}"
    assert "torch" in modules  # the probe did see the training run
