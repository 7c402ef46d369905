"""Issue 31 items 2 and 3: the documentation travels with the package (the wheel carries docs/, `convtrain docs
[TOPIC]` reads it offline), every pointer in a --help text names a `convtrain docs` topic that exists, and the user
docs hold no notes to developers and no path of the development machine.

Breaks tried (each failed here): a help text pointing at "docs/deploy.md" again (the pointer test); a pointer to
"convtrain docs deploying" (no such topic); "README line ~135 ... should say so" put back into cli-notes.md and
"../shared/data" into getting-started.md (the notes test); package-data without "docs/*.md" (the wheel test:
no page in the wheel).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile

import click
import pytest
import typer

from convtrain.cli.app import app
from convtrain.cli.docs import topics

from ..conftest import REPO

DOCS = REPO / "docs"


def _help_texts(command: click.Command, prefix: str = "convtrain") -> list[tuple[str, str]]:
    texts = [(prefix, command.help or "")]
    texts += [(f"{prefix} {p.opts[0] if getattr(p, 'opts', None) else p.name}", getattr(p, "help", None) or "")
              for p in command.params]
    for name, sub in getattr(command, "commands", {}).items():
        texts += _help_texts(sub, f"{prefix} {name}")
    return texts


def test_every_help_pointer_names_a_docs_topic_that_exists():
    texts = _help_texts(typer.main.get_command(app))
    assert len(texts) > 100
    known = topics()
    pointers = []
    for where, text in texts:
        flat = " ".join(text.split())
        assert not re.search(r"\bdocs/[\w-]+\.md|README", flat), f"{where}: a pointer to a file a pip user lacks"
        if not where.startswith("convtrain docs"):  # its own help names it as a command, not a topic
            pointers += [(where, topic) for topic in re.findall(r"convtrain docs ([\w-]+)", flat)]
    assert {t for _, t in pointers} >= {"deploy", "extending"}
    assert [(w, t) for w, t in pointers if t not in known] == []


# what a note to a developer or a path of the development machine looks like in a page
NOTES = [r"\blines? ~\d+", r"should (?:say so|be updated)", r"any more\.", r"\.\./shared/", r"/work/",
         r"\bTODO\b", r"\bFIXME\b", r"\bXXX\b"]


def test_user_docs_hold_no_notes_to_developers_and_no_development_paths():
    found = []
    for page in [REPO / "README.md", *sorted(DOCS.glob("*.md"))]:
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            found += [f"{page.name}:{number}: {line.strip()}" for pattern in NOTES if re.search(pattern, line)]
    assert found == []


def test_convtrain_docs_lists_reads_and_refuses_topics():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = lambda *a: subprocess.run([sys.executable, "-m", "convtrain", "docs", *a], capture_output=True,  # noqa: E731
                                    text=True, env=env, timeout=60)
    listed = run()
    assert listed.returncode == 0 and "extending" in listed.stdout and "Extending convtrain" in listed.stdout
    page = run("deploy")
    assert page.returncode == 0 and "Deploying an exported model" in page.stdout
    assert run("deploy", "--path").stdout.strip().endswith(os.path.join("convtrain", "docs", "deploy.md"))
    wrong = run("deplyo")
    assert wrong.returncode == 2 and "no documentation topic 'deplyo' (did you mean 'deploy'?)" in wrong.stderr


@pytest.mark.slow
def test_the_wheel_carries_the_docs_and_convtrain_docs_reads_them_from_it(tmp_path):
    """About 10 s: builds the wheel from a copy of the checkout (no build isolation: offline), unpacks it,
    runs `convtrain docs` from it."""
    # from a copy of the checkout: an earlier build's build/ folder would hand its stale files to this one
    src = tmp_path / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "site", "runs", ".venv", "__pycache__", ".*_cache", "tests", "bench"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                            str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("convtrain-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "site")
    assert {f"convtrain/docs/{p.name}" for p in DOCS.glob("*.md")} <= names
    assert "convtrain/docs/img/serve.png" in names
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(tmp_path / "site")
    out = subprocess.run([sys.executable, "-m", "convtrain", "docs", "extending", "--path"], capture_output=True,
                         text=True, env=env, timeout=60, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == str(tmp_path / "site" / "convtrain" / "docs" / "extending.md")
