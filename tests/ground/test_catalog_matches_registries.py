"""Commands that do not train stay free of torch, and the static tables they read match the registries;
commands that did import torch end without the interpreter's slow teardown of it."""

from __future__ import annotations

import json
import subprocess
import sys

from convtrain import catalog

from ..conftest import REPO

# Runs the commands one after another in one process and says, after each, whether torch (or
# torchvision) has been imported: a top-level `import torch` added anywhere on their path fails here.
_PROBE = """
import contextlib, io, json, sys
import convtrain.cli
seen = {"import convtrain.cli": "torch" in sys.modules}
for args in (["--help"], ["config", "keys"], ["config", "keys", "--markdown"], ["runs", sys.argv[1]],
             ["models"], ["models", "--json"]):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            convtrain.cli.app(args, prog_name="convtrain", standalone_mode=False)
        except SystemExit:
            pass
    seen[" ".join(args)] = "torch" in sys.modules or "torchvision" in sys.modules
print(json.dumps(seen))
"""


def test_commands_that_do_not_train_do_not_import_torch(tmp_path):
    out = subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert not any(seen.values()), f"these imported torch: {[k for k, v in seen.items() if v]}"


def test_model_catalog_matches_the_registry():
    from convtrain.models import create_model, get_spec, list_models

    real = [{"name": n, "parameters": sum(p.numel() for p in create_model(n, num_classes=10).parameters()),
             "description": get_spec(n).description, "kwargs": get_spec(n).kwarg_defaults()} for n in list_models()]
    assert catalog.MODELS == real  # update convtrain/catalog.py when a built-in model changes


def test_every_registered_idx_dataset_has_a_source_record():
    from convtrain.data.mnist import DATASETS
    from convtrain.data.sources import registered_names

    assert sorted(DATASETS) == registered_names()


def test_the_table_of_data_sources_imports_no_torch():
    code = ("import sys\nfrom convtrain.data import sources, detect\nsources.names(); sources.data_help()\n"
            "assert 'torch' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr


# A command run as the console script does: an atexit handler and an object whose __del__ runs only
# when the interpreter tears its modules down. The teardown after `import torch` took 0.5-1.0 s.
_EXIT_PROBE = """
import atexit, sys
class Teardown:
    def __del__(self):
        print("module teardown ran", flush=True)
keep = Teardown()
atexit.register(lambda: print("atexit handler ran", flush=True))
sys.argv = ["convtrain", *sys.argv[1:]]
from convtrain.cli import main
main()
"""


def test_a_command_that_imported_torch_skips_the_teardown_but_not_atexit():
    out = subprocess.run([sys.executable, "-c", _EXIT_PROBE, "config", "show", "--config", "configs/smoke.yaml"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "model:" in out.stdout  # the command's own output, flushed
    assert "atexit handler ran" in out.stdout and "module teardown ran" not in out.stdout
    bad = subprocess.run([sys.executable, "-c", _EXIT_PROBE, "config", "show", "--config", "configs/smoke.yaml",
                          "--set", "train.epochz=1"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and "epochz" in bad.stderr  # the exit code and the error line survive


def test_a_command_without_torch_exits_normally():
    out = subprocess.run([sys.executable, "-c", _EXIT_PROBE, "models"], capture_output=True, text=True, cwd=REPO,
                         timeout=60)
    assert out.returncode == 0 and "article_cnn" in out.stdout
    assert "module teardown ran" in out.stdout  # nothing to gain: no torch, the ordinary exit
