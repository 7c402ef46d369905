// The runs page: one card per run (or per --seeds sweep, per tune study) under --runs-dir: the numbers a person
// compares, in words, and its pictures, each opening full size.
"use strict";

const main = document.getElementById("runs");
const pct = (v) => (v == null ? "-" : (100 * v).toFixed(2) + "%");
const num = (v) => (v == null ? "-" : Number(v).toPrecision(4));
const secs = (v) => (v == null ? "-" : v < 120 ? `${v.toFixed(1)} s` : `${(v / 60).toFixed(1)} min`);
const PICTURES = {"curves.png": "loss and accuracy per epoch", "confusion.png": "confusion matrix (test set)"};

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text != null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function table(rows) {
  const t = el("table");
  for (const [k, v] of rows) {
    const tr = el("tr");
    tr.append(el("th", k), el("td", v, "num"));
    t.append(tr);
  }
  return t;
}

function epochs(r) {
  if (r.epochs == null) return "-";
  return r.epochs_total == null ? String(r.epochs) : `${r.epochs} of ${r.epochs_total}`;
}

function runCard(r) {
  const s = el("section", null, "run");
  s.setAttribute("aria-label", `run ${r.name}`);
  s.append(el("h2", r.name));
  if (r.model) s.append(el("p", `${r.model} on ${r.dataset ?? "?"}`, "sub"));
  s.append(table([["status", r.status], ["epochs", epochs(r)], ["best validation accuracy", pct(r.best_val_acc)],
                  ["test accuracy", pct(r.test_accuracy)], ["test balanced accuracy", pct(r.test_balanced_accuracy)],
                  ["test macro-F1", num(r.test_macro_f1)], ["test loss", num(r.test_loss)],
                  ["training time", secs(r.train_seconds)]]));
  if (r.error) s.append(el("p", r.error, "error"));
  if (r.report) {  // eval --report wrote RUN/report/report.html
    const a = el("a", "report: per class, mistakes, calibration", "report");
    a.href = r.report;
    a.target = "_blank";
    const p = el("p");
    p.append(a);
    s.append(p);
  }
  for (const src of r.images) {
    const name = src.split("/").pop();
    const a = el("a");
    a.href = src;
    a.target = "_blank";
    a.title = "open full size";
    const img = el("img");
    img.src = src;
    img.loading = "lazy";
    img.alt = `${r.name}: ${PICTURES[name] ?? name}`;
    a.append(img);
    const fig = el("figure");
    fig.append(a, el("figcaption", `${PICTURES[name] ?? name} (click for full size)`));
    s.append(fig);
  }
  return s;
}

function sweepCard(r) {
  const s = el("section", null, "run sweep");
  s.setAttribute("aria-label", `sweep ${r.name}`);
  s.append(el("h2", `${r.name}: ${r.seeds.length} seeds`));
  if (r.model) s.append(el("p", `${r.model} on ${r.dataset ?? "?"}`, "sub"));
  const std = r.test_accuracy_std == null ? "" : ` ± ${pct(r.test_accuracy_std)}`;
  s.append(table([["status", r.status], ["seeds", r.seeds.join(", ")], ["epochs", epochs(r)],
                  ["mean best validation accuracy", pct(r.best_val_acc)],
                  ["mean test accuracy", pct(r.test_accuracy) + std],
                  ["same test images for every seed", r.same_test_set == null ? "-" : (r.same_test_set ? "yes" : "no")],
                  ["training time (all seeds)", secs(r.train_seconds)]]));
  const d = el("details");
  d.append(el("summary", "each seed"));
  d.append(table(r.runs.map((x) => [x.name, `test ${pct(x.test_accuracy)}, best val ${pct(x.best_val_acc)} (${x.status})`])));
  s.append(d);
  return s;
}

function studyCard(r) {
  const s = el("section", null, "run study");
  s.setAttribute("aria-label", `study ${r.name}`);
  s.append(el("h2", `${r.name}: study of ${r.trials.length} trials`));
  if (r.model) s.append(el("p", `${r.model} on ${r.dataset ?? "?"}`, "sub"));
  const c = r.trials_count;
  const best = r.metric === "val_acc" ? pct(r.best_value) : num(r.best_value);
  s.append(table([["trials", `${c.done} done, ${c.pruned} pruned, ${c.failed} failed` +
                   (c.running ? `, ${c.running} running` : "")],
                  [`best ${r.metric === "val_acc" ? "validation accuracy" : r.metric}`, best],
                  ["epochs trained (all trials)", String(r.epochs)],
                  ["training time (all trials)", secs(r.train_seconds)]]));
  const d = el("details");
  d.append(el("summary", "each trial"));
  d.append(table(r.trials.map((x) => [x.name, `best val ${pct(x.best_val_acc)}, test ${pct(x.test_accuracy)}, ` +
                                               `${epochs(x)} epochs (${x.status})`])));
  s.append(d);
  return s;
}

const CARDS = {sweep: sweepCard, study: studyCard};

async function load() {
  try {
    const res = await fetch("/v1/runs");
    const body = await res.json();
    if (!res.ok) {
      main.replaceChildren(el("p", `Cannot list the runs: ${body.error ?? res.status}`));
      return;
    }
    if (!body.runs.length) {
      main.replaceChildren(el("p", `No runs under '${body.runs_dir}' (start the server with --runs-dir).`));
      return;
    }
    main.replaceChildren(...body.runs.map((r) => (CARDS[r.kind] ?? runCard)(r)));
  } catch (err) {
    main.replaceChildren(el("p", `Cannot list the runs (${err}).`));
  }
}

load();
