// The drawing page: a canvas, live top-k bars from POST /v2/predict, the model picker and card.
// Plain JavaScript, no build step. White ink on black (MNIST's polarity), so auto-invert leaves it alone.
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const bars = document.getElementById("bars");
const top1 = document.getElementById("top");
const statusLine = document.getElementById("status");
const picker = document.getElementById("model");
const card = document.getElementById("card");
const TOP_K = 5;
const DEBOUNCE_MS = 150;
let models = [];
let drawing = false;
let dirty = false;       // something drawn since the last clear
let uploaded = false;    // the pad shows an uploaded picture: the next stroke starts afresh
let timer = null;
let seq = 0;             // only the newest answer is shown, whatever order they come back in

function clearPad() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, pad.width, pad.height);
  dirty = false;
  uploaded = false;
  seq += 1;
  bars.replaceChildren();
  top1.textContent = "-";
  statusLine.textContent = "";
  clearTimeout(timer);
  setState("idle");
}

function point(e) {
  // the canvas may be shown smaller than 280 px on a phone: map CSS pixels to canvas pixels
  const r = pad.getBoundingClientRect();
  return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height];
}

pad.addEventListener("pointerdown", (e) => {
  if (uploaded) clearPad();
  drawing = true;
  pad.setPointerCapture(e.pointerId);
  const [x, y] = point(e);
  ctx.strokeStyle = "#fff";
  ctx.fillStyle = "#fff";
  ctx.lineWidth = 22;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.arc(x, y, ctx.lineWidth / 2, 0, 2 * Math.PI);
  ctx.fill();
  ctx.beginPath();
  ctx.moveTo(x, y);
  dirty = true;
  schedule();
});
pad.addEventListener("pointermove", (e) => {
  if (!drawing) return;
  const [x, y] = point(e);
  ctx.lineTo(x, y);
  ctx.stroke();
  schedule();
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => { if (drawing) { drawing = false; schedule(); } });
}

// data-state on <body>: "waiting" while an answer for the current drawing is due, then "idle"
// (scripts and the browser test wait for it instead of guessing a delay)
function setState(s) { document.body.dataset.state = s; }

function schedule() {
  setState("waiting");
  clearTimeout(timer);
  timer = setTimeout(sendCanvas, DEBOUNCE_MS);
}

// Frame the drawing like an MNIST digit: the ink's bounding box scaled to fit 20/28 of the side,
// its centre of mass moved to the centre. The server then pads, resizes and normalizes as usual.
function framed() {
  const { data, width, height } = ctx.getImageData(0, 0, pad.width, pad.height);
  let x0 = width, y0 = height, x1 = -1, y1 = -1, mass = 0, mx = 0, my = 0;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const v = data[(y * width + x) * 4];
      if (v > 20) {
        x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
        mass += v; mx += v * x; my += v * y;
      }
    }
  }
  if (x1 < 0) return null;
  const w = x1 - x0 + 1, h = y1 - y0 + 1;
  const scale = (pad.width * 20 / 28) / Math.max(w, h);
  const out = document.createElement("canvas");
  out.width = pad.width; out.height = pad.height;
  const o = out.getContext("2d");
  o.fillStyle = "#000";
  o.fillRect(0, 0, out.width, out.height);
  o.imageSmoothingQuality = "high";
  const dx = out.width / 2 - (mx / mass - x0) * scale, dy = out.height / 2 - (my / mass - y0) * scale;
  o.drawImage(pad, x0, y0, w, h, dx, dy, w * scale, h * scale);
  return out;
}

function sendCanvas() {
  if (!dirty || uploaded) { setState("idle"); return; }
  const out = framed();
  if (!out) { setState("idle"); return; }
  out.toBlob((blob) => predict(blob, "drawing.png"), "image/png");
}

async function predict(blob, filename) {
  const mine = ++seq;
  const form = new FormData();
  form.append("file", blob, filename);
  form.append("model", picker.value);
  form.append("top_k", String(Math.min(TOP_K, currentModel() ? currentModel().classes.length : TOP_K)));
  try {
    const res = await fetch("/v2/predict", { method: "POST", body: form });
    const body = await res.json();
    if (mine !== seq) return;
    if (!res.ok) statusLine.textContent = body.error || `error ${res.status}`;
    else { statusLine.textContent = ""; showBars(body.predictions[0]); }
  } catch (err) {
    if (mine === seq) statusLine.textContent = `no answer from the server (${err})`;
  }
  if (mine === seq && !drawing) setState("idle");
}

function showBars(p) {
  top1.textContent = p.label;
  bars.replaceChildren(...p.topk.map((t) => {
    const li = document.createElement("li");
    const pct = (100 * t.prob).toFixed(1) + "%";
    li.dataset.name = t.label;
    li.dataset.prob = String(t.prob);
    li.setAttribute("aria-label", `${t.label}: ${pct}`);
    const name = document.createElement("span");
    name.textContent = t.label;
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = pct;
    bar.append(fill);
    const num = document.createElement("span");
    num.className = "pct";
    num.textContent = pct;
    li.append(name, bar, num);
    return li;
  }));
}

document.getElementById("clear").addEventListener("click", clearPad);

document.getElementById("upload").addEventListener("change", (e) => {
  const file = e.target.files[0];
  if (!file) return;
  clearPad();
  // the file itself is sent (the same bytes `convtrain predict` would read); the pad only shows it
  const img = new Image();
  img.onload = () => {
    const s = Math.min(pad.width / img.width, pad.height / img.height);
    ctx.drawImage(img, (pad.width - img.width * s) / 2, (pad.height - img.height * s) / 2, img.width * s, img.height * s);
    URL.revokeObjectURL(img.src);
  };
  img.src = URL.createObjectURL(file);
  uploaded = true;
  setState("waiting");
  predict(file, file.name);
  e.target.value = "";
});

function currentModel() { return models.find((m) => m.name === picker.value); }

// The page speaks of what the model knows: digits for a digit model, its class names otherwise.
function showWording(m) {
  const digits = m.classes.length === 10 && m.classes.every((c, i) => c === String(i));
  const what = digits ? "a digit" : (m.classes.length <= 6 ? `one of: ${m.classes.join(", ")}`
                                                          : `one of its ${m.classes.length} classes`);
  document.getElementById("draw-title").textContent = `Draw ${what}`;
  document.title = `convtrain: draw ${digits ? "a digit" : "for " + m.name}`;
  pad.setAttribute("aria-label", `Drawing area: draw ${what} with the mouse or a finger`);
  document.getElementById("hint").textContent = m.mnist_style
    ? "White ink on black, like MNIST. The drawing is centred and scaled like an MNIST digit before it is sent."
    : `This model learned from ${m.dataset} pictures (${m.classes.join(", ")}); a drawing is sent as white ink on ` +
      "black and taken as it is. Uploading a picture like its training images gives a fairer answer.";
}

function showCard() {
  const m = currentModel();
  if (!m) return;
  showWording(m);
  const acc = m.test_accuracy == null ? "not recorded" : (100 * m.test_accuracy).toFixed(2) + "%";
  const rows = [["model", m.model], ["dataset", m.dataset ?? "?"], ["test accuracy", acc],
                ["classes", m.classes.join(", ")], ["input", `${m.channels}×${m.input_size.join("×")}`],
                ["parameters", m.parameters.toLocaleString("en")], ["epoch", String(m.epoch ?? "?")],
                ["checkpoint", m.checkpoint]];
  card.replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    return [dt, dd];
  }));
}

picker.addEventListener("change", () => { showCard(); if (dirty && !uploaded) sendCanvas(); });

async function loadModels() {
  try {
    const res = await fetch("/v1/models");
    const body = await res.json();
    models = body.models;
    picker.replaceChildren(...models.map((m) => new Option(`${m.name} (${m.dataset ?? "?"})`, m.name)));
    picker.value = body.default;
    showCard();
  } catch (err) {
    statusLine.textContent = `cannot list the models (${err})`;
  }
}

clearPad();
loadModels();
