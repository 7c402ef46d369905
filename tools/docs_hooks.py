"""MkDocs hook (mkdocs.yml ``hooks:``): links from a docs page to the repository's own files.

The pages link to source files as ``[conv.py line 42](../convtrain/ops/conv.py#L42)``, which works
when the Markdown is read on GitHub or in an editor (tests/project/test_docs.py checks those lines). The
site only holds docs/, so MkDocs cannot resolve such a link (and ``--strict`` fails on it). This hook
turns each link that leaves docs/ into a link to the file on the repository's web page when
``repo_url`` is set in mkdocs.yml, else into its plain text. Links inside docs/ are left to MkDocs.
"""

from __future__ import annotations

import posixpath
import re

LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)")


def on_page_markdown(markdown, page, config, files):
    page_dir = posixpath.dirname(page.file.src_uri)
    repo = (config.get("repo_url") or "").rstrip("/")
    branch = (config.get("edit_uri") or "blob/main/").strip("/").split("/")
    prefix = f"{repo}/{'/'.join(branch[:2])}" if repo else ""

    def rewrite(match: re.Match) -> str:
        text, target = match.group(1), match.group(2)
        if "://" in target or target.startswith(("#", "mailto:")):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = posixpath.normpath(posixpath.join(page_dir, path))
        if not resolved.startswith("../"):
            return match.group(0)  # a page or file of the site: MkDocs checks it
        in_repo = resolved[len("../"):]
        if prefix:
            return f"[{text}]({prefix}/{in_repo}{'#' + anchor if anchor else ''})"
        return text

    return LINK.sub(rewrite, markdown)
