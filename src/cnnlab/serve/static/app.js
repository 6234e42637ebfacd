// cnnlab prediction page: plain JavaScript, no framework, no network access beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, needsKey: false, busy: false, camTimer: null, stream: null };

// ---------- talking to the server ----------
function keyHeaders() { // the key guards /predict and /model alike (not /health)
  const key = $("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

async function getJSON(url) {
  const response = await fetch(url, { headers: keyHeaders() });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

async function predict(items) { // items: [{blob, name, url}]
  const form = new FormData();
  for (const item of items) form.append("files", item.blob, item.name);
  const headers = keyHeaders();
  const started = performance.now();
  const response = await fetch("/predict", { method: "POST", body: form, headers });
  const body = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.detail || `HTTP ${response.status}`);
  $("timing").textContent = `${Math.round(performance.now() - started)} ms`;
  return body.predictions;
}

async function run(items) {
  showError("");
  try {
    const predictions = await predict(items);
    renderPredictions(predictions, items);
  } catch (error) {
    showError(error.message);
  }
}

function showError(message) {
  $("error").hidden = !message;
  $("error").textContent = message;
}

// ---------- results ----------
function renderPredictions(predictions, items) {
  const results = $("results");
  results.replaceChildren();
  predictions.forEach((prediction, i) => {
    const top = prediction.top[0];
    const block = el("article", "prediction");
    block.dataset.topClass = top.class;
    const head = el("div", "prediction-head");
    if (items[i] && items[i].url) {
      const img = el("img", "thumb");
      img.src = items[i].url;
      img.alt = prediction.filename;
      head.append(img);
    }
    const title = el("div", "prediction-title");
    title.append(el("div", "top-class", top.class), el("div", "muted small", `${pct(top.probability)} · ${prediction.filename}`));
    head.append(title);
    const bars = el("ol", "bars");
    for (const entry of prediction.top) {
      const row = el("li", "bar-row");
      const fill = el("div", "bar-fill");
      fill.style.width = `${Math.max(entry.probability * 100, 0.5)}%`;
      const bar = el("div", "bar");
      bar.append(fill);
      row.append(el("span", "bar-label", entry.class), bar, el("span", "bar-value", pct(entry.probability)));
      bars.append(row);
    }
    block.append(head, bars);
    results.append(block);
  });
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const pct = (p) => `${(p * 100).toFixed(p >= 0.995 || p < 0.1 ? 1 : 0)}%`;

// ---------- model card ----------
function renderModel(model) {
  state.model = model;
  const size = model.input_size;
  $("model-name").textContent = `${model.name} · ${model.class_names.length} classes · ${size.height}×${size.width}×${size.channels}`;
  const facts = [
    ["Architecture", model.architecture.name],
    ["Input", `${size.height}×${size.width}, ${size.channels === 1 ? "grayscale" : "RGB"}`],
    ["Runtime", model.runtime],
  ];
  for (const [key, label] of [["test_accuracy", "Test accuracy"], ["val_accuracy", "Validation accuracy"],
    ["accuracy", "Train accuracy"], ["test_loss", "Test loss"]]) {
    if (typeof model.metrics[key] === "number") {
      facts.push([label, key.includes("loss") ? model.metrics[key].toFixed(4) : pct(model.metrics[key])]);
    }
  }
  const v = model.versions || {};
  facts.push(["Versions", ["cnnlab", "torch"].filter((k) => v[k]).map((k) => `${k} ${v[k]}`).join(", ")]);
  const card = $("card");
  card.replaceChildren();
  for (const [key, value] of facts) card.append(el("dt", "", key), el("dd", "", String(value)));
  const classes = $("classes");
  classes.replaceChildren(...model.class_names.map((name) => el("span", "chip", name)));
  if (model.curves) {
    $("curves").src = model.curves;
    $("curves-figure").hidden = false;
  }
  $("drop-hint").textContent = `JPG, PNG, WebP, BMP or GIF · up to ${model.limits.max_files} files`;
  const seen = $("seen");
  seen.width = size.width;
  seen.height = size.height;
  if (size.channels === 1 && size.height <= 64) selectTab("draw"); // digit-style models: drawing first
}

// ---------- tabs ----------
function selectTab(name) {
  for (const button of document.querySelectorAll(".tab-button")) {
    const active = button.dataset.tab === name;
    button.classList.toggle("active", active);
    button.setAttribute("aria-selected", String(active));
  }
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.id === `tab-${name}`);
  if (name !== "camera") stopCamera();
}

// ---------- upload and drag-and-drop ----------
function useFiles(fileList) {
  const files = Array.from(fileList).filter((f) => f.type.startsWith("image/") || /\.(jpe?g|png|webp|bmp|gif)$/i.test(f.name));
  if (!files.length) return showError("Those files are not images (JPG, PNG, WebP, BMP or GIF).");
  const max = state.model ? state.model.limits.max_files : 16;
  if (files.length > max) showError(`Only the first ${max} images are sent (the server's limit).`);
  run(files.slice(0, max).map((f) => ({ blob: f, name: f.name, url: URL.createObjectURL(f) })));
}

function setupUpload() {
  const drop = $("drop");
  $("file-input").addEventListener("change", (event) => useFiles(event.target.files));
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, (event) => { event.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (event) => useFiles(event.dataTransfer.files));
}

// ---------- drawing ----------
function setupDrawing() {
  const pad = $("pad");
  const ctx = pad.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, pad.width, pad.height); };
  clear();
  let drawing = false;
  let last = null;
  let timer = null;
  const point = (event) => {
    const r = pad.getBoundingClientRect();
    return [(event.clientX - r.left) * (pad.width / r.width), (event.clientY - r.top) * (pad.height / r.height)];
  };
  const line = (a, b) => {
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = pad.width / 13; // MNIST strokes are ~2 px of 28
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(a[0], a[1]);
    ctx.lineTo(b[0], b[1]);
    ctx.stroke();
  };
  pad.addEventListener("pointerdown", (event) => {
    drawing = true;
    last = point(event);
    line(last, last);
    pad.setPointerCapture(event.pointerId);
  });
  pad.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const p = point(event);
    line(last, p);
    last = p;
    if (!timer) timer = setTimeout(() => { timer = null; predictDrawing(); }, 250); // live while drawing
  });
  const end = () => { if (drawing) { drawing = false; predictDrawing(); } };
  pad.addEventListener("pointerup", end);
  pad.addEventListener("pointercancel", end);
  $("clear").addEventListener("click", () => {
    clear();
    $("seen").getContext("2d").clearRect(0, 0, $("seen").width, $("seen").height);
    $("results").replaceChildren(el("p", "empty muted", "Draw a digit."));
  });
}

// Crop to the stroke, pad to a square with MNIST's margin (a 20 px digit in a 28 px image), and
// scale to the model's input size; the server receives exactly what the preview shows.
function predictDrawing() {
  const pad = $("pad");
  const { width, height } = pad;
  const pixels = pad.getContext("2d").getImageData(0, 0, width, height).data;
  let [x0, y0, x1, y1] = [width, height, -1, -1];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (pixels[(y * width + x) * 4] > 40) {
        x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
      }
    }
  }
  if (x1 < 0) return;
  const side = Math.max(x1 - x0, y1 - y0) * (28 / 20);
  const cx = (x0 + x1) / 2;
  const cy = (y0 + y1) / 2;
  const seen = $("seen");
  const sctx = seen.getContext("2d");
  sctx.fillStyle = "#000";
  sctx.fillRect(0, 0, seen.width, seen.height);
  sctx.imageSmoothingEnabled = true;
  sctx.imageSmoothingQuality = "high";
  sctx.drawImage(pad, cx - side / 2, cy - side / 2, side, side, 0, 0, seen.width, seen.height);
  seen.toBlob((blob) => run([{ blob, name: "drawing.png", url: seen.toDataURL() }]), "image/png");
}

// ---------- camera ----------
async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return showError("This browser gives no camera access here (it needs https or localhost).");
  }
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
  } catch (error) {
    return showError(`Camera unavailable: ${error.message}`);
  }
  const video = $("video");
  video.srcObject = state.stream;
  await video.play();
  $("cam-start").disabled = true;
  $("cam-stop").disabled = false;
  $("cam-status").textContent = "live";
  state.camTimer = setInterval(captureFrame, 600);
}

function captureFrame() {
  const video = $("video");
  if (state.busy || !video.videoWidth) return;
  const side = Math.min(video.videoWidth, video.videoHeight); // centre square, like the preview
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = Math.min(side, 256);
  canvas.getContext("2d").drawImage(video, (video.videoWidth - side) / 2, (video.videoHeight - side) / 2,
    side, side, 0, 0, canvas.width, canvas.height);
  state.busy = true;
  canvas.toBlob(async (blob) => {
    await run([{ blob, name: "camera.jpg", url: canvas.toDataURL("image/jpeg", 0.8) }]);
    state.busy = false;
  }, "image/jpeg", 0.85);
}

function stopCamera() {
  clearInterval(state.camTimer);
  state.camTimer = null;
  if (state.stream) state.stream.getTracks().forEach((track) => track.stop());
  state.stream = null;
  $("cam-start").disabled = false;
  $("cam-stop").disabled = true;
  $("cam-status").textContent = "";
}

// ---------- start ----------
async function main() {
  for (const button of document.querySelectorAll(".tab-button")) {
    button.addEventListener("click", () => selectTab(button.dataset.tab));
  }
  setupUpload();
  setupDrawing();
  $("cam-start").addEventListener("click", startCamera);
  $("cam-stop").addEventListener("click", stopCamera);
  try {
    const health = await getJSON("/health");
    $("key-row").hidden = !health.api_key_required;
    if (health.api_key_required) {
      showError("This server needs an API key: enter it below.");
      $("api-key").addEventListener("change", loadModel);
    } else {
      await loadModel();
    }
  } catch (error) {
    showError(`Could not reach the server: ${error.message}`);
  }
}

async function loadModel() {
  try {
    renderModel(await getJSON("/model"));
    showError("");
    document.body.dataset.ready = "true";
  } catch (error) {
    showError(`Could not load the model: ${error.message}`);
  }
}

main();
