"""docs/notebook.ipynb runs in a real Jupyter kernel (nbclient + ipykernel): a cell that errors fails the suite.

Breaks tried (each failed here): a typo in a cell (``convtrain.evalute``); the plots of a run switching
matplotlib to its Agg backend (the notebook's own figures then vanish: no image/png output); the API's
reporter left out (no progress lines in the training cell).
"""

from __future__ import annotations

import json
import os
import sys

import nbclient  # the test extra installs nbclient, nbformat and ipykernel: this test never skips
import nbformat
import pytest

from ..conftest import REPO


def _text(output) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    data = output.get("data", {})
    return str(data.get("text/plain", "")) + str(data.get("text/html", ""))


@pytest.mark.slow
def test_notebook_runs_in_a_jupyter_kernel(data_root, tmp_path, monkeypatch):
    nb = nbformat.read(REPO / "docs" / "notebook.ipynb", as_version=4)
    # the kernel is this interpreter (not whatever `python3` kernel the machine has), importing this checkout
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    monkeypatch.setenv("CONVTRAIN_DATA_ROOT", str(data_root))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    spec = tmp_path / "jupyter" / "kernels" / "python3"  # JUPYTER_PATH comes before the user's own kernels
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
                                                          "{connection_file}"], "display_name": "convtrain test",
                                                  "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    work = tmp_path / "work"
    work.mkdir()
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(work)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, when a cell fails
    code = [c for c in nb.cells if c.cell_type == "code"]
    outputs = ["".join(_text(o) for o in c.outputs) for c in code]
    train_cell = next(i for i, c in enumerate(code) if "convtrain.train(" in c.source)
    assert "epoch 1/1" in outputs[train_cell] and "TrainResult(" in outputs[train_cell]
    assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs), "the plot cell drew nothing"
    assert outputs[-1].strip().endswith("True")  # the loaded model predicts what convtrain.predict does
    runs = list((work / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "train.log").is_file() and (runs[0] / "checkpoints" / "best.pt").is_file()
