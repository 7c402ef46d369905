"""Docs that must match the code: formula-to-line references, the generated reference pages, the README
as a front door, and the docs site, built strictly and offline.

Breaks tried (each failed here): a key added to the schema without `make docs` (configuration page
stale); a command's help changed without it (cli.md stale); README padded to 251 lines; a docs page
left out of mkdocs.yml's nav; a link to a missing page; Material's Google Fonts (`font: false`
removed: the site then loads fonts.googleapis.com); a YAML example with a misspelled key.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from convtrain.config.load import load_config
from convtrain.config.reference import markdown_reference, schema_rows

from ..conftest import REPO

DOCS = REPO / "docs"


def test_convolution_doc_points_at_the_lines_that_implement_each_formula():
    doc = (REPO / "docs" / "convolution.md").read_text(encoding="utf-8")
    source = (REPO / "convtrain" / "ops" / "conv.py").read_text(encoding="utf-8").splitlines()
    refs = re.findall(r"`` `(.+?)` `` →\s*\[conv\.py line (\d+)\]\(\.\./convtrain/ops/conv\.py#L(\d+)\)", doc)
    assert len(refs) >= 10
    for code, line, anchor in refs:
        assert line == anchor
        assert code in source[int(line) - 1], f"docs/convolution.md: conv.py line {line} no longer holds `{code}`"


def _tool():
    """tools/update_docs.py (what `make docs` runs), imported from its path."""
    spec = importlib.util.spec_from_file_location("update_docs", REPO / "tools" / "update_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_page_reference_matches_schema():
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    block = page.split("<!-- config-reference:start -->\n", 1)[1].split("<!-- config-reference:end -->", 1)[0]
    assert block == markdown_reference(schema_rows()), "docs/configuration.md is stale: run `make docs`"


def test_cli_reference_page_matches_the_app():
    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert page == _tool().render_cli(), "docs/cli.md is stale: run `make docs` (or python tools/update_docs.py)"
    for command in ("train", "finetune", "eval", "predict", "serve", "config show", "data inspect"):
        assert f"## `convtrain {command}`" in page


def test_readme_is_a_front_door():
    """At most 250 lines; install, the first run, own images, serving and the docs on it; links that resolve."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    first_screen = "\n".join(readme.splitlines()[:20])
    for command in ("convtrain train", "convtrain eval", "convtrain predict", "convtrain serve"):
        assert command in first_screen
    headings = re.findall(r"^## (.+)$", readme, flags=re.M)
    assert headings[:6] == ["Install", "The first run, in two minutes", "Your own images", "Serving",
                            "Documentation", "Layout"]
    assert "pip install \"convtrain[" in readme and "download.pytorch.org/whl/cpu" in readme and "make test" in readme
    assert not re.search(r"--checkpoint \S*\*", readme), "a glob where a checkpoint is named"
    links = re.findall(r"\]\(((?!https?:)[^)#]+)\)", readme)
    assert len(links) >= 10 and [link for link in links if not (REPO / link).exists()] == []
    for page in set(DOCS.glob("*.md")) - {DOCS / "index.md"}:  # every page of the site is linked from the front door
        assert f"(docs/{page.name})" in readme, page.name


def _nav_pages(nav) -> list[str]:
    out = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out += _nav_pages(value) if isinstance(value, list) else [value]
    return out


def test_every_docs_page_is_in_the_nav():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    pages = _nav_pages(config["nav"])
    assert sorted(pages) == sorted(p.name for p in DOCS.glob("*.md")), "add the page to mkdocs.yml's nav"


@pytest.mark.slow
def test_docs_site_builds_strict_and_offline(tmp_path):
    """`mkdocs build --strict` (what `make docs` runs) with every network request failing; no page asks for one."""
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "HTTP_PROXY": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"),
                          "-d", str(site)], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    for page in DOCS.glob("*.md"):
        html = (site / page.with_suffix(".html").name).read_text(encoding="utf-8")
        assert not re.findall(r"<(?:script|link|img)[^>]*(?:src|href)=\"(?:https?:)?//[^\"]*", html), page.name
    assert (site / "notebook.ipynb").is_file() and (site / "img" / "serve.png").is_file()
    assert "conv.py line" in (site / "convolution.html").read_text(encoding="utf-8")


def test_yaml_examples_in_the_docs_are_valid_configs():
    blocks = [b for p in [REPO / "README.md", *DOCS.glob("*.md")]
              for b in re.findall(r"```yaml\n(.*?)```", p.read_text(encoding="utf-8"), flags=re.S)]
    assert blocks
    spaces = [b for b in blocks if b.startswith("# space.yaml")]
    for block in blocks:
        if block not in spaces:
            load_config(None, base=yaml.safe_load(block))
    assert spaces, "docs/tune.md shows a search space"
    from convtrain.tune.space import load_space

    with tempfile.TemporaryDirectory() as tmp:  # a search space shown in the docs is one `convtrain tune` accepts
        for i, block in enumerate(spaces):
            path = Path(tmp) / f"space-{i}.yaml"
            path.write_text(block, encoding="utf-8")
            assert load_space(path, load_config("speedrun")).params


def test_readme_test_command_is_what_ci_runs():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in readme and "\nmake test\n" in ci
