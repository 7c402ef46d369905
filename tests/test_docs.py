"""Docs that must match the code: formula-to-line references and the README config reference."""

from __future__ import annotations

import re

from convtrain.config.reference import markdown_reference, schema_rows

from .conftest import REPO


def test_convolution_doc_points_at_the_lines_that_implement_each_formula():
    doc = (REPO / "docs" / "convolution.md").read_text(encoding="utf-8")
    source = (REPO / "convtrain" / "ops" / "conv.py").read_text(encoding="utf-8").splitlines()
    refs = re.findall(r"`` `(.+?)` `` →\s*\[conv\.py line (\d+)\]\(\.\./convtrain/ops/conv\.py#L(\d+)\)", doc)
    assert len(refs) >= 10
    for code, line, anchor in refs:
        assert line == anchor
        assert code in source[int(line) - 1], f"docs/convolution.md: conv.py line {line} no longer holds `{code}`"


def test_readme_config_reference_matches_schema():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- config-reference:start -->\n", 1)[1].split("<!-- config-reference:end -->", 1)[0]
    assert block == markdown_reference(schema_rows()), "README config reference is stale: run `make docs`"


def test_readme_test_command_is_what_ci_runs():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in readme and "\nmake test\n" in ci
