// The runs page: one card per run under --runs-dir with its final numbers and its pictures.
"use strict";

const main = document.getElementById("runs");
const pct = (v) => (v == null ? "-" : (100 * v).toFixed(2) + "%");
const num = (v) => (v == null ? "-" : Number(v).toPrecision(4));

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text != null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function runCard(r) {
  const s = el("section", null, "run");
  s.setAttribute("aria-label", `run ${r.name}`);
  s.append(el("h2", r.name));
  const t = el("table");
  const rows = [["status", r.status], ["epochs", r.epochs == null ? "-" : String(r.epochs)],
                ["best val acc", pct(r.best_val_acc)], ["test accuracy", pct(r.test_accuracy)],
                ["test loss", num(r.test_loss)]];
  for (const [k, v] of Object.entries(r.last_epoch || {})) {
    if (k !== "epoch") rows.push([`last epoch ${k}`, num(v)]);
  }
  for (const [k, v] of rows) {
    const tr = el("tr");
    tr.append(el("th", k), el("td", v, "num"));
    t.append(tr);
  }
  s.append(t);
  for (const src of r.images) {
    const img = el("img");
    img.src = src;
    img.loading = "lazy";
    img.alt = `${r.name}: ${src.endsWith("curves.png") ? "loss and accuracy curves" : "confusion matrix"}`;
    s.append(img);
  }
  return s;
}

async function load() {
  try {
    const res = await fetch("/v1/runs");
    const body = await res.json();
    if (!body.runs.length) {
      main.replaceChildren(el("p", `No runs under '${body.runs_dir}' (start the server with --runs-dir).`));
      return;
    }
    main.replaceChildren(...body.runs.map(runCard));
  } catch (err) {
    main.replaceChildren(el("p", `Cannot list the runs (${err}).`));
  }
}

load();
