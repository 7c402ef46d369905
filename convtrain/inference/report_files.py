"""The files of ``eval --report DIR``: report.json, report.md, a self-contained report.html, the
confusion matrix (confusion.csv, confusion_normalized.csv, confusion.png, confusion_normalized.png),
reliability.png, and the gallery's images (images/mistake-NN.png, images/correct-NN.png).

Everything is rendered in memory first, then each file is written through :mod:`convtrain.atomic`; the
folder's other files are left alone (only gallery images of an earlier report that this one no longer
has are removed). report.html needs nothing else: its pictures are inline (``data:`` URLs), it loads no
script, font or stylesheet, and its Content-Security-Policy forbids any; every name in it (class names,
paths) is escaped, so markup in a class name shows as text.

:func:`check_folder` runs before anything is evaluated: a DIR that is a file (or below one) is a usage
mistake (exit 2); a folder that cannot take files is a failure (exit 1); either way nothing is written.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import tempfile
from pathlib import Path

import torch

from .. import atomic
from ..errors import ConfigError, OutputError
from .results import Example, Report

SCALE = 4  # gallery images are written 4x their size (nearest neighbour): 28 px digits become 112 px
MAX_TEXT_CLASSES = 30  # confusion pictures print their numbers up to this many classes


def default_folder(checkpoint: Path) -> Path | None:
    """RUN/report for a checkpoint inside a run directory (RUN/checkpoints/X.pt), else None."""
    run = checkpoint.resolve().parent.parent
    return run / "report" if checkpoint.resolve().parent.name == "checkpoints" and (run / "config.yaml").is_file() \
        else None


def check_folder(folder: Path) -> None:
    """Refuse a report folder that cannot be written, before anything runs (see the module docstring)."""
    from ..artifacts.plots import _pyplot

    _pyplot()  # the pictures need matplotlib: a missing extra stops here (exit 2)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--report {folder}: it is a file, not a folder; give a folder for the report")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"--report {folder}: {existing} is a file, not a folder; give a folder for the report")
    try:  # the one reliable test (root ignores modes): a file that is removed again at once
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write the report into {folder}: {exc.strerror or exc}") from None


def report_json(report: Report) -> dict:
    """report.json's object: :meth:`Report.as_json` with each gallery image's file, NaN as null."""
    names = {}
    for prefix, examples in (("mistake", report.mistakes), ("correct", report.least_confident_correct)):
        names.update({e.position: f"images/{prefix}-{i:02d}.png" for i, e in enumerate(examples, start=1)})
    return _clean(report.as_json(names))


def write_report(report: Report, folder: Path) -> list[Path]:
    """Render every file, then write them into ``folder`` (created); returns the paths written."""
    check_folder(folder)
    gallery = _gallery_files(report)
    pictures = _pictures(report)
    images = {e.position: name for name, (_, e) in gallery.items()}
    files: dict[str, bytes] = {
        "report.json": (json.dumps(report_json(report), indent=1, allow_nan=False) + "\n").encode(),
        "report.md": markdown(report, images).encode(),
        "report.html": page(report, pictures, {n: png for n, (png, _) in gallery.items()}).encode(),
        "confusion.csv": _csv(report, normalized=False).encode(),
        "confusion_normalized.csv": _csv(report, normalized=True).encode(),
        **pictures, **{name: png for name, (png, _) in gallery.items()}}
    try:
        (folder / "images").mkdir(parents=True, exist_ok=True)
        written = []
        for name, data in files.items():
            with atomic.replacing(folder / name) as tmp:
                tmp.write_bytes(data)
            written.append(folder / name)
        for old in (folder / "images").glob("*.png"):  # an earlier report's gallery beyond this one's
            if old.name.startswith(("mistake-", "correct-")) and f"images/{old.name}" not in files:
                old.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write the report into {folder}: {exc.strerror or exc}") from None
    return written


def _clean(value):
    """JSON has no NaN: a value that is not finite (a loss of inf) is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# Pictures


def _png(image: torch.Tensor) -> bytes:
    """A uint8 [C, H, W] image as PNG bytes, SCALE times larger (nearest neighbour)."""
    from PIL import Image

    x = image.repeat_interleave(SCALE, 1).repeat_interleave(SCALE, 2)
    arr = x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _gallery_files(report: Report) -> dict[str, tuple[bytes, Example]]:
    found = {}
    for prefix, examples in (("mistake", report.mistakes), ("correct", report.least_confident_correct)):
        for i, e in enumerate(examples, start=1):
            found[f"images/{prefix}-{i:02d}.png"] = (_png(e.image), e)
    return found


def _figure_bytes(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _pictures(report: Report) -> dict[str, bytes]:
    from ..artifacts.plots import _pyplot

    plt = _pyplot()
    cm = torch.tensor(report.confusion_matrix, dtype=torch.float64)
    rates = cm / cm.sum(1, keepdim=True).clamp(min=1)
    shade = cm.log1p() / cm.max().clamp(min=1).log1p()  # counts coloured on a log scale: a few mistakes show
    return {"confusion.png": _figure_bytes(plt, _matrix(plt, report, shade, cm, "counts")),
            "confusion_normalized.png": _figure_bytes(plt, _matrix(plt, report, rates, rates, "row-normalized")),
            "reliability.png": _figure_bytes(plt, _reliability(plt, report))}


def _matrix(plt, report: Report, colors: torch.Tensor, values: torch.Tensor, what: str):
    n = len(report.classes)
    side = min(3.2 + 0.25 * n, 16)
    fig, ax = plt.subplots(figsize=(side + 1, side), dpi=100)
    ax.imshow(colors.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(n if n <= MAX_TEXT_CLASSES else 0):
        for j in range(n):
            v = float(values[i, j])
            if v:
                text = f"{int(v)}" if what == "counts" else f"{v:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if colors[i, j] > 0.5 else "black")
    labels = report.classes if n <= MAX_TEXT_CLASSES * 2 else [str(i) for i in range(n)]
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix ({what})", fontsize=9)
    fig.tight_layout()
    return fig


def _reliability(plt, report: Report):
    cal, bins = report.calibration, report.calibration["bins"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6.5), dpi=100, gridspec_kw={"height_ratios": [3, 1]},
                                      sharex=True)
    width = 1 / len(bins)
    centers = [(b["lo"] + b["hi"]) / 2 for b in bins]
    top.bar(centers, [b["accuracy"] or 0 for b in bins], width=width * 0.95, color="#4a7ab5", label="accuracy")
    top.bar(centers, [(b["confidence"] or 0) - (b["accuracy"] or 0) for b in bins], bottom=[b["accuracy"] or 0 for b in bins],
            width=width * 0.95, color="#e8a0a0", alpha=0.6, label="gap to confidence")
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfectly calibrated")
    top.set_ylabel("accuracy")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.legend(loc="upper left", fontsize=8)
    t = f", temperature {cal['temperature']:.3f}" if cal["temperature"] != 1.0 else ""
    top.set_title(f"reliability: ECE {cal['ece']:.4f}, MCE {cal['mce']:.4f} ({len(bins)} bins{t})", fontsize=9)
    bottom.bar(centers, [b["count"] for b in bins], width=width * 0.95, color="#888888")
    bottom.set_xlabel("confidence (top probability)")
    bottom.set_ylabel("images")
    fig.tight_layout()
    return fig


def _csv(report: Report, normalized: bool) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["true \\ predicted", *report.classes])
    for name, row in zip(report.classes, report.confusion_matrix):
        total = max(sum(row), 1)
        w.writerow([name, *([f"{v / total:.6f}" for v in row] if normalized else row)])
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# Markdown and HTML


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2%}"


def _where(source: dict) -> str:
    if "path" in source:
        return source["path"]
    key = "row" if "row" in source else "index"
    where = f"{source.get('dataset', '')} {source.get('split', '')}".strip() or source.get("file", "")
    array = f" {source['array']}" if "array" in source else ""
    return f"{where}{array} {key} {source.get(key)}" if source else "-"


def _summary_rows(report: Report) -> list[tuple[str, str]]:
    rows = [("images", str(report.num_samples)), ("accuracy", _pct(report.accuracy)),
            ("balanced accuracy", _pct(report.balanced_accuracy))]
    for avg in ("macro", "weighted"):
        m = getattr(report, avg)
        rows.append((f"{avg} precision / recall / F1", f"{m['precision']:.4f} / {m['recall']:.4f} / {m['f1']:.4f}"))
    if report.top_k is not None:
        rows.append((f"top-{report.top_k['k']} accuracy", _pct(report.top_k["accuracy"])))
    cal = report.calibration
    rows.append(("ECE / MCE / NLL / Brier", f"{cal['ece']:.4f} / {cal['mce']:.4f} / {cal['nll']:.4f} / {cal['brier']:.4f}"))
    if "uncalibrated" in cal:
        u = cal["uncalibrated"]
        rows.append(("the same without the temperature",
                     f"{u['ece']:.4f} / {u['mce']:.4f} / {u['nll']:.4f} / {u['brier']:.4f}"))
    return rows


def _title(report: Report) -> str:
    return f"{report.model} on {report.dataset}, {report.split} split"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(report: Report, images: dict[int, str]) -> str:
    t = f"; temperature {report.temperature:.4f}" if report.temperature != 1.0 else ""
    out = [f"# Report: {_md_cell(_title(report))}", "",
           f"Checkpoint `{report.checkpoint}` (epoch {report.epoch}){t}.", "", "| | |", "| --- | --- |",
           *[f"| {a} | {b} |" for a, b in _summary_rows(report)], "", "## Per class", "",
           "| class | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |"]
    out += [f"| {_md_cell(r['label'])} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | {r['support']} |"
            for r in report.per_class]
    out += ["", "## Confusion matrix", "", "![counts](confusion.png) ![row-normalized](confusion_normalized.png)", "",
            "Most confused (true → predicted):", "", "| true | predicted | images | share of the true class |",
            "| --- | --- | --- | --- |"]
    out += [f"| {_md_cell(p['true']['label'])} | {_md_cell(p['predicted']['label'])} | {p['count']} | {_pct(p['rate'])} |"
            for p in report.most_confused] or ["| - | - | 0 | - |"]
    for title, examples in (("The most confident mistakes", report.mistakes),
                            ("The least confident correct predictions", report.least_confident_correct)):
        out += ["", f"## {title}", "", "| image | true | predicted (probability) | p(true) | source |",
                "| --- | --- | --- | --- | --- |"]
        out += [f"| ![]({images.get(e.position, '')}) | {_md_cell(e.label)} | {_md_cell(e.predicted_label)} "
                f"({_pct(e.prob)}) | {_pct(e.true_prob)} | {_md_cell(_where(e.source))} |" for e in examples]
    cal = report.calibration
    out += ["", "## Calibration", "", f"ECE {cal['ece']:.4f} ({cal['bins_count']} equal-width bins), MCE "
            f"{cal['mce']:.4f}, NLL {cal['nll']:.4f}, Brier {cal['brier']:.4f}.", "", "![reliability](reliability.png)", ""]
    return "\n".join(out)


_STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}.gallery{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:150px;font-size:12px;border:1px solid #ddd;padding:6px;overflow-wrap:anywhere}
figure img{width:112px;height:112px;image-rendering:pixelated;display:block;margin:auto}.wrong{color:#b00}
.pics img{max-width:48%;vertical-align:top}.meta{color:#555}"""


def _img(data: bytes, alt: str, extra: str = "") -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(data).decode()}" alt="{html.escape(alt)}"{extra}>'


def _figures(examples: list[Example], gallery: dict[str, bytes], prefix: str) -> str:
    cards = []
    for i, e in enumerate(examples, start=1):
        e_ = html.escape
        said = f'<span class="wrong">{e_(e.predicted_label)}</span>' if prefix == "mistake" else e_(e.predicted_label)
        cards.append(f'<figure data-position="{e.position}">{_img(gallery[f"images/{prefix}-{i:02d}.png"], e.label)}'
                     f'<figcaption>true <b>{e_(e.label)}</b><br>said {said} {_pct(e.prob)}<br>'
                     f'p(true) {_pct(e.true_prob)}<br><code>{e_(_where(e.source))}</code></figcaption></figure>')
    return f'<div class="gallery">{"".join(cards) or "<p>none</p>"}</div>'


def page(report: Report, pictures: dict[str, bytes], gallery: dict[str, bytes]) -> str:
    """report.html: one file, nothing loaded from anywhere (see the module docstring)."""
    e = html.escape
    rows = "".join(f"<tr><td>{e(a)}</td><td>{e(b)}</td></tr>" for a, b in _summary_rows(report))
    per = "".join(f"<tr><td>{e(r['label'])}</td><td>{r['precision']:.4f}</td><td>{r['recall']:.4f}</td>"
                  f"<td>{r['f1']:.4f}</td><td>{r['support']}</td></tr>" for r in report.per_class)
    pairs = "".join(f"<tr><td>{e(p['true']['label'])}</td><td>{e(p['predicted']['label'])}</td><td>{p['count']}</td>"
                    f"<td>{_pct(p['rate'])}</td></tr>" for p in report.most_confused)
    t = f"; temperature {report.temperature:.4f}" if report.temperature != 1.0 else ""
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{e(_title(report))}</title><style>{_STYLE}</style></head><body>"
            f"<h1>Report: {e(_title(report))}</h1><p class=meta>checkpoint <code>{e(str(report.checkpoint))}</code> "
            f"(epoch {report.epoch}){e(t)}</p><section id=summary><table>{rows}</table></section>"
            f"<section id=per-class><h2>Per class</h2><table><tr><th>class</th><th>precision</th><th>recall</th>"
            f"<th>F1</th><th>support</th></tr>{per}</table></section>"
            f"<section id=confusion><h2>Confusion matrix</h2><div class=pics>"
            f"{_img(pictures['confusion.png'], 'confusion matrix, counts')}"
            f"{_img(pictures['confusion_normalized.png'], 'confusion matrix, row-normalized')}</div>"
            f"<h3>Most confused</h3><table><tr><th>true</th><th>predicted</th><th>images</th>"
            f"<th>share of the true class</th></tr>{pairs}</table></section>"
            f"<section id=mistakes><h2>The most confident mistakes</h2>{_figures(report.mistakes, gallery, 'mistake')}"
            f"</section><section id=unsure><h2>The least confident correct predictions</h2>"
            f"{_figures(report.least_confident_correct, gallery, 'correct')}</section>"
            f"<section id=calibration><h2>Calibration</h2>{_img(pictures['reliability.png'], 'reliability diagram')}"
            f"</section></body></html>\n")
