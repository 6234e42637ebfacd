// cnnlab explore: one page over the explorer's JSON API. No libraries: everything it shows comes from the server.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, layers: [], input: null, maps: null, timer: null, step: null, stepImage: null,
                sandbox: null, sbTimer: null, stream: null, compare: [], labels: {} };

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}
function keyHeaders() {
  const key = $("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}
function showError(message) { $("error").textContent = message; $("error").hidden = !message; }
async function api(url, options = {}) {
  const response = await fetch(url, { ...options, headers: { ...keyHeaders(), ...(options.headers || {}) } });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (e) { /* not JSON */ }
    throw new Error(detail);
  }
  return response;
}
// Images need the key too, so they are fetched and shown as blob URLs.
async function setImage(img, url) {
  const blob = await (await api(url)).blob();
  if (img.dataset.blob) URL.revokeObjectURL(img.dataset.blob);
  img.dataset.blob = URL.createObjectURL(blob);
  img.src = img.dataset.blob;
  await img.decode().catch(() => {});
  return img;
}
const shapeText = (shape) => shape.join("x");
const fmt = (v) => (Math.abs(v) >= 1000 || (Math.abs(v) < 0.001 && v !== 0)) ? v.toExponential(2) : v.toFixed(3);
const pct = (p) => (100 * p).toFixed(1) + "%";
const layerByName = (name) => state.layers.find((l) => l.name === name);

// ------------------------------------------------------------------ layers
function renderLayers() {
  const list = $("layer-list");
  list.replaceChildren();
  for (const layer of state.layers) {
    const row = el("li", "layer-row" + (layer.steppable ? " conv" : ""));
    row.dataset.layer = layer.name;
    row.append(el("span", "lname", layer.name), el("span", "shape", shapeText(layer.output_shape)),
               el("span", "kind", layer.kind),
               el("span", "params", layer.params ? layer.params.toLocaleString() + " params" : ""));
    row.addEventListener("click", () => selectLayer(layer.name));
    list.append(row);
  }
  const total = state.layers.reduce((s, l) => s + l.params, 0);
  $("totals").textContent = `${state.layers.length} layers, ${total.toLocaleString()} parameters in all`;
}

// A functional model's graph: one row of boxes per depth (longest path from the input), arrows from feeder to fed.
function branches(layers) {
  return layers.some((l, i) => l.inputs.length !== 1 || l.inputs[0] !== (i === 0 ? "input" : layers[i - 1].name));
}
function renderGraph() {
  const layers = state.layers;
  $("graph-box").hidden = !branches(layers);
  if ($("graph-box").hidden) return;
  const depth = { input: 0 }, columns = [["input"]];
  for (const l of layers) {
    depth[l.name] = 1 + Math.max(0, ...l.inputs.map((n) => depth[n] ?? 0));
    (columns[depth[l.name]] = columns[depth[l.name]] || []).push(l.name);
  }
  const W = 170, H = 40, GX = 18, GY = 26, BEND = 44, width = Math.max(...columns.map((c) => c ? c.length : 0));
  const where = {};
  columns.forEach((names, d) => (names || []).forEach((n, i) => {
    where[n] = { x: 10 + i * (W + GX) + (width - names.length) * (W + GX) / 2, y: 10 + d * (H + GY) };
  }));
  const ns = "http://www.w3.org/2000/svg", svg = $("graph");
  const make = (tag, attrs, parent) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    parent.append(node);
    return node;
  };
  svg.replaceChildren();
  svg.setAttribute("width", 20 + width * (W + GX) - GX + BEND);
  svg.setAttribute("height", 20 + columns.length * (H + GY) - GY);
  const marker = make("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" }, make("defs", {}, svg));
  make("path", { d: "M0,0 L10,5 L0,10 z", fill: "#94a3b8" }, marker);
  for (const l of layers) {
    for (const from of l.inputs) {
      const a = where[from] || where.input, b = where[l.name];
      if (depth[l.name] - (depth[from] ?? 0) > 1) {  // a skip over rows: around their right side, not through them
        const y1 = a.y + H / 2, y2 = b.y + H / 2, x1 = a.x + W, x2 = b.x + W, out = Math.max(x1, x2) + BEND * 0.8;
        make("path", { class: "edge skip", d: `M${x1},${y1} C${out},${y1} ${out},${y2} ${x2},${y2}` }, svg);
        continue;
      }
      const x1 = a.x + W / 2, y1 = a.y + H, x2 = b.x + W / 2, y2 = b.y;
      make("path", { class: "edge", d: `M${x1},${y1} C${x1},${y1 + GY} ${x2},${y2 - GY} ${x2},${y2}` }, svg);
    }
  }
  const box = (name, title, sub, cls) => {
    const g = make("g", { class: "node " + cls, "data-layer": name, transform: `translate(${where[name].x},${where[name].y})` }, svg);
    make("rect", { width: W, height: H, rx: 7 }, g);
    make("text", { x: 8, y: 16 }, g).textContent = title.length > 21 ? title.slice(0, 20) + "…" : title;
    make("text", { x: 8, y: 32, class: "sub" }, g).textContent = sub.length > 27 ? sub.slice(0, 26) + "…" : sub;
    return g;
  };
  const [h, w, c] = [state.model.input_size.height, state.model.input_size.width, state.model.input_size.channels];
  box("input", "input", `${h}x${w}x${c}`, "");
  for (const l of layers) {
    const g = box(l.name, l.name, `${l.kind} ${shapeText(l.output_shape)}`, (l.steppable ? "conv" : "") + (l.inputs.length > 1 ? " merge" : ""));
    g.addEventListener("click", () => selectLayer(l.name));
  }
}

function selectLayer(name) {
  const layer = layerByName(name);
  document.querySelectorAll(".layer-row").forEach((r) => r.classList.toggle("active", r.dataset.layer === name));
  document.querySelectorAll("#graph .node").forEach((g) => g.classList.toggle("active", g.dataset.layer === name));
  document.querySelectorAll(".fmap-layer").forEach((r) => r.classList.toggle("active", r.dataset.layer === name));
  $("layer-card").hidden = false;
  $("layer-title").textContent = `${layer.name} (${layer.kind})`;
  const dl = el("dl", "details");
  const add = (term, value, code) => {
    if (value === null || value === undefined || value === "") return;
    dl.append(el("dt", "", term));
    const dd = el("dd");
    dd.append(code ? el("code", "", value) : document.createTextNode(value));
    dl.append(dd);
  };
  add("Input shape", layer.input_shape ? shapeText(layer.input_shape) : null);
  add("Output shape", shapeText(layer.output_shape));
  add("Fed by", layer.inputs.join(", "));
  const s = layer.settings;
  if (s.kernel) add("Kernel, strides", `${s.kernel.join("x")}, stride ${s.strides.join("x")}`);
  if (s.padding) add("Padding", `${s.padding}: ${s.pads.top} top, ${s.pads.bottom} bottom, ${s.pads.left} left, ${s.pads.right} right`);
  for (const key of ["filters", "units", "out_channels", "groups", "activation", "rate"]) {
    if (s[key] !== undefined) add(key.replace("_", " "), String(s[key]));
  }
  if (layer.formula) {
    add("Output size", layer.formula.general);
    add("Height", layer.formula.height, true);
    if (layer.formula.width !== layer.formula.height) add("Width", layer.formula.width, true);
  }
  add("Parameters", layer.params_worked || "none (no weights)", Boolean(layer.params_worked));
  add("Trainable", layer.trainable === null ? "no weights" : (layer.trainable ? "yes" : "no (frozen)"));
  if (layer.receptive_field) {
    const [h, w] = state.model.input_size ? [state.model.input_size.height, state.model.input_size.width] : [0, 0];
    const [rh, rw] = layer.receptive_field;
    const whole = rh >= h && rw >= w;
    add("Receptive field", `${rh}x${rw} input pixels` + (whole ? " (the whole image)" : "")
        + (layer.jump ? `; neighbouring outputs are ${layer.jump.join("x")} pixels apart` : ""));
  }
  $("layer-details").replaceChildren(dl);
  if (layer.steppable && $("step-layer").value !== name) { $("step-layer").value = name; resetStepper(); }
}

// ------------------------------------------------------------------ inputs
async function loadInputs() {
  const listing = await (await api("/api/inputs")).json();
  $("samples").replaceChildren();
  for (const item of listing.inputs) addSample(item);
  renderRanked(listing);
  return listing.inputs;
}
// The mistakes are searched for beside the server; until they are found the page asks again now and then.
function renderRanked(listing) {
  $("ranking-note").textContent = listing.ranking === "running" ? "Looking for the model's mistakes among the test images…"
    : (listing.ranking || "").startsWith("failed") ? `No mistakes list: the search ${listing.ranking}.` : "";
  if (listing.ranking === "running") {
    setTimeout(async () => { try { renderRanked(await (await api("/api/inputs")).json()); } catch (e) { showError(e.message); } }, 1500);
  }
  for (const [group, id] of [["mistakes", "mistakes"], ["least_confident", "least-confident"]]) {
    $(id).replaceChildren();
    for (const item of listing[group] || []) {
      const button = addSample(item, $(id));
      button.title = `${item.label}: predicted ${state.model.classes[item.predicted]} at ${pct(item.probability)}`;
    }
  }
  $("ranked").hidden = !(listing.mistakes || []).length && !(listing.least_confident || []).length;
}
function addSample(item, box = $("samples")) {
  state.labels[item.key] = item;
  let button = box.querySelector(`[data-key="${item.key}"]`);
  if (!button) {
    button = el("button", "sample");
    button.dataset.key = item.key;
    button.title = item.label;
    const img = el("img");
    img.alt = item.label;
    button.append(img);
    if (item.true_class !== null && item.true_class !== undefined) button.append(el("span", "", state.model.classes[item.true_class]));
    button.addEventListener("click", () => selectInput(item.key, item.label));
    box.append(button);
    setImage(img, item.image).catch(() => {});
  }
  return button;
}
async function upload(file) {
  showError("");
  const body = new FormData();
  body.append("files", file, file.name);
  try {
    const { inputs } = await (await api("/api/inputs", { method: "POST", body })).json();
    const item = inputs[0];
    const button = addSample(item);
    $("samples").prepend(button);
    await selectInput(item.key, item.label);
  } catch (e) { showError(e.message); }
}

// ------------------------------------------------------------------ a drawing or a webcam frame, sent as an upload
function canvasFile(canvas, name) {
  return new Promise((resolve) => canvas.toBlob((blob) => resolve(new File([blob], name, { type: "image/png" })), "image/png"));
}
function clearDrawing() {
  const ctx = $("draw-canvas").getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, $("draw-canvas").width, $("draw-canvas").height);
}
function setUpDrawing() {
  const canvas = $("draw-canvas"), ctx = canvas.getContext("2d");
  let last = null;
  const at = (e) => { const r = canvas.getBoundingClientRect(); return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height]; };
  canvas.addEventListener("pointerdown", (e) => { canvas.setPointerCapture(e.pointerId); last = at(e); draw(last); });
  canvas.addEventListener("pointermove", (e) => { if (last) { const p = at(e); draw(p); last = p; } });
  canvas.addEventListener("pointerup", () => { last = null; });
  function draw([x, y]) {
    ctx.strokeStyle = "#fff"; ctx.lineWidth = canvas.width / 12; ctx.lineCap = "round"; ctx.lineJoin = "round";
    ctx.beginPath(); ctx.moveTo(last[0], last[1]); ctx.lineTo(x, y); ctx.stroke();
  }
  clearDrawing();
}
async function startCamera() {
  showError("");
  $("cam-box").hidden = false;
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    $("cam-video").srcObject = state.stream;
  } catch (e) {
    $("cam-box").hidden = true;
    showError(`The camera did not start (${e.name || e.message}): allow it in the browser, or upload a photo instead.`);
  }
}
function stopCamera() {
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  state.stream = null;
  $("cam-box").hidden = true;
}
async function cameraFrame() {
  const video = $("cam-video");
  if (!video.videoWidth) { showError("The camera has no picture yet: wait a moment and take the frame again."); return; }
  const canvas = el("canvas");
  canvas.width = video.videoWidth; canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  await upload(await canvasFile(canvas, "webcam.png"));
}

async function selectInput(key, label) {
  showError("");
  state.input = key;
  document.querySelectorAll(".sample").forEach((b) => b.classList.toggle("active", b.dataset.key === key));
  $("input-title").textContent = label;
  setImage($("seen"), `/api/inputs/${key}/image.png`);
  const maps = await (await api(`/api/inputs/${key}/activations`)).json();
  state.maps = maps;
  renderProbabilities(maps);
  renderMaps(maps);
  const top = maps.probabilities.indexOf(Math.max(...maps.probabilities));
  $("cam-class").value = String(top);
  document.body.dataset.input = key;
  await Promise.all([renderCam(), loadStep()]);
}

function renderProbabilities(maps) {
  const order = maps.probabilities.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]).slice(0, 10);
  const box = $("probs");
  box.replaceChildren();
  order.forEach(([p, i], rank) => {
    const row = el("div", "bar-row" + (rank === 0 ? " top" : ""));
    row.dataset.class = maps.classes[i];
    const bar = el("div", "bar");
    const fill = el("span");
    fill.style.width = pct(p);
    bar.append(fill);
    row.append(el("span", "name", maps.classes[i]), bar, el("span", "pct", pct(p)));
    box.append(row);
  });
  box.dataset.top = maps.classes[order[0][1]];
}

// ------------------------------------------------------------------ feature maps
function renderMaps(maps) {
  const box = $("fmaps");
  box.replaceChildren();
  for (const layer of maps.layers) {
    const row = el("div", "fmap-layer");
    row.dataset.layer = layer.name;
    const meta = el("div", "meta");
    meta.append(el("b", "", layer.name), el("div", "muted small", `${layer.kind}, ${layer.height}x${layer.width}x${layer.channels}`),
                el("div", "muted small mono", `values ${fmt(layer.min)} … ${fmt(layer.max)}`));
    if (layer.shown < layer.channels) meta.append(el("div", "muted small", `first ${layer.shown} of ${layer.channels} channels`));
    const img = el("img", "grid");
    img.alt = `feature maps of ${layer.name}`;
    img.addEventListener("click", (event) => openChannel(layer, img, event));
    row.append(meta, img);
    box.append(row);
    // first layers first: each grid is its own request, answered from the one forward pass already made
    const order = $("sort-mean").checked ? "mean" : "index";
    img.dataset.order = order;
    setImage(img, `/api/inputs/${maps.input}/maps.png?layer=${encodeURIComponent(layer.name)}&order=${order}`).catch((e) => showError(e.message));
  }
}

async function openChannel(layer, img, event) {
  const rect = img.getBoundingClientRect();
  const scale = img.naturalWidth / rect.width;
  const x = (event.clientX - rect.left) * scale, y = (event.clientY - rect.top) * scale;
  const col = Math.floor(x / (layer.width + layer.gap)), row = Math.floor(y / (layer.height + layer.gap));
  const tile = Math.min(row * layer.columns + col, layer.shown - 1);
  const channel = img.dataset.order === "mean" ? layer.order[tile] : tile;
  $("modal-title").textContent = `${layer.name}, channel ${channel}`;
  const stats = channel < layer.shown ? `min ${fmt(layer.channel_min[channel])}   mean ${fmt(layer.channel_mean[channel])}   max ${fmt(layer.channel_max[channel])}` : "";
  $("enlarged-range").textContent = stats;
  showInside(layer, channel).catch((e) => showError(e.message));
  $("modal").hidden = false;
  $("modal").dataset.channel = channel;
  await setImage($("enlarged"), `/api/inputs/${state.input}/maps.png?layer=${encodeURIComponent(layer.name)}&channel=${channel}`);
}

// ------------------------------------------------------------------ ReLU before/after, max pooling's windows
// A map drawn cell by cell on a canvas, on the scale [low, high] (black to white), so two maps can share one.
function drawMap(canvas, values, low, high) {
  const ctx = canvas.getContext("2d"), rows = values.length, cols = values[0].length;
  const cell = canvas.width / Math.max(rows, cols), span = Math.max(high - low, 1e-12);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  values.forEach((line, i) => line.forEach((v, j) => {
    const g = Math.round(255 * Math.min(1, Math.max(0, (v - low) / span)));
    ctx.fillStyle = `rgb(${g},${g},${g})`;
    ctx.fillRect(j * cell, i * cell, Math.ceil(cell), Math.ceil(cell));
  }));
  return { ctx, cell };
}
async function showInside(layer, channel) {
  const box = $("inside");
  box.hidden = true;
  box.dataset.kind = "";
  const where = `/api/inputs/${state.input}`, q = `layer=${encodeURIComponent(layer.name)}&channel=${channel}`;
  if (layer.relu) {
    const r = await (await api(`${where}/relu?${q}`)).json();
    const [low, high] = r.before_range;
    drawMap($("inside-a"), r.before, low, high);
    drawMap($("inside-b"), r.after, low, high);
    $("inside-title").textContent = "ReLU: before (left) and after (right), on one scale";
    $("inside-note").textContent = `Before ReLU the values run from ${fmt(low)} to ${fmt(high)}; `
      + `ReLU sets the ${r.zeroed} of ${r.size} that are not positive to 0 (the flat grey on the right), and keeps the rest.`;
    box.dataset.kind = "relu";
  } else if (layer.max_pool) {
    const p = await (await api(`${where}/pool?${q}`)).json();
    const flat = p.input.flat();
    const { ctx, cell } = drawMap($("inside-a"), p.input, Math.min(...flat), Math.max(...flat));
    const [kh, kw] = p.kernel, [oh, ow] = p.output_shape;
    const kept = Array.from({ length: oh }, (_, i) => p.windows.slice(i * ow, (i + 1) * ow).map((w) => w.value));
    drawMap($("inside-b"), kept, Math.min(...flat), Math.max(...flat));
    ctx.lineWidth = 1;
    ctx.strokeStyle = "rgba(79,70,229,.7)";
    for (const w of p.windows) ctx.strokeRect(w.origin[1] * cell, w.origin[0] * cell, kw * cell, kh * cell);
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#e11d48";
    for (const w of p.windows) ctx.strokeRect(w.argmax[1] * cell + 1, w.argmax[0] * cell + 1, cell - 2, cell - 2);
    $("inside-title").textContent = `Max pooling: the ${kh}x${kw} windows (blue), the value each keeps (red), and the ${oh}x${ow} result`;
    $("inside-note").textContent = `Its input, ${p.input.length}x${p.input[0].length}, in windows moving ${p.strides.join("x")}: `
      + `each keeps only its largest value, so ${oh}x${ow} values survive of ${flat.length}.`;
    box.dataset.kind = "pool";
  } else return;
  box.hidden = false;
}

// ------------------------------------------------------------------ the output-size sandbox
async function sandbox() {
  const params = new URLSearchParams({ size: $("sb-size").value, kernel: $("sb-kernel").value,
                                       stride: $("sb-stride").value, padding: $("sb-padding").value });
  const out = $("sb-result");
  try {
    const r = await (await api(`/api/output-size?${params}`)).json();
    out.textContent = `${r.size}x${r.size} -> ${r.formula}x${r.formula}:  ${r.worked}`
      + (r.matches ? "  (a real Conv2D gives the same)" : `  (a real Conv2D gives ${r.measured}!)`);
    out.dataset.output = String(r.formula);
    state.sandbox = { ...r, position: 0 };
  } catch (e) { out.textContent = e.message; out.dataset.output = ""; state.sandbox = null; }
  drawSandbox();
}
// The sandbox's input (padding zeros in orange), the window at the current output position, and the output grid.
function drawSandbox() {
  const canvas = $("sb-canvas"), ctx = canvas.getContext("2d"), r = state.sandbox;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const where = $("sb-where");
  if (!r || r.formula < 1) { where.textContent = ""; return; }
  const [before, after] = r.pads, n = r.size + before + after, o = r.formula;
  if (n > 40) { where.textContent = `Drawn up to 40 cells a side (this input is ${n} with its padding).`; return; }
  const cell = Math.floor(Math.min(196 / n, 22)), outCell = Math.floor(Math.min(110 / o, 22));
  const i = Math.floor(r.position / o), j = r.position % o;
  for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) {
    const pad = y < before || x < before || y >= before + r.size || x >= before + r.size;
    ctx.fillStyle = pad ? "#fde7c8" : "#e8ecf4";
    ctx.fillRect(x * cell + 1, y * cell + 1, cell - 2, cell - 2);
  }
  ctx.strokeStyle = "#4f46e5"; ctx.lineWidth = 3;
  ctx.fillStyle = "rgba(79,70,229,.25)";
  ctx.fillRect(j * r.stride * cell, i * r.stride * cell, r.window * cell, r.window * cell);
  ctx.strokeRect(j * r.stride * cell, i * r.stride * cell, r.window * cell, r.window * cell);
  const left = n * cell + 30, top = Math.max(0, (n * cell - o * outCell) / 2);
  for (let y = 0; y < o; y++) for (let x = 0; x < o; x++) {
    const index = y * o + x;
    ctx.fillStyle = index === r.position ? "#4f46e5" : index < r.position ? "#c7d2fe" : "#f1f3f9";
    ctx.fillRect(left + x * outCell + 1, top + y * outCell + 1, outCell - 2, outCell - 2);
  }
  ctx.fillStyle = "#6b7386"; ctx.font = "12px system-ui, sans-serif";
  ctx.fillText(`${r.size}x${r.size} input` + (before + after ? " + padding" : ""), 0, n * cell + 16);
  ctx.fillText(`${o}x${o} output`, left, top + o * outCell + 16);
  where.textContent = `Output (${i}, ${j}) of ${o}x${o}: the ${r.window}x${r.window} window starts at row ${i * r.stride}, `
    + `column ${j * r.stride} of the ${before + after ? "padded " : ""}input and moves ${r.stride} cell(s) per step.`;
  where.dataset.position = `${i},${j}`;
}
function sandboxStep() {
  if (!state.sandbox) return;
  const o = state.sandbox.formula;
  state.sandbox.position = (state.sandbox.position + 1) % (o * o);
  drawSandbox();
}
function sandboxPlay() {
  if (state.sbTimer) { clearInterval(state.sbTimer); state.sbTimer = null; $("sb-play").textContent = "▶ Slide"; return; }
  $("sb-play").textContent = "❚❚ Pause";
  state.sbTimer = setInterval(sandboxStep, 350);
}

// ------------------------------------------------------------------ the convolution step by step
function stepLayer() { return layerByName($("step-layer").value); }
function resetStepper() {
  const layer = stepLayer();
  if (!layer) return;
  const [h, w, c] = layer.output_shape;
  $("step-pos").max = h * w - 1;
  $("step-pos").value = 0;
  $("step-channel").max = c - 1;
  if (Number($("step-channel").value) > c - 1) $("step-channel").value = 0;
  $("step-in").value = 0;
  state.stepImage = null;
  loadStep();
}
async function loadStep() {
  const layer = stepLayer();
  if (!layer || !state.input) return;
  const w = layer.output_shape[1];
  const pos = Number($("step-pos").value);
  const row = Math.floor(pos / w), col = pos % w;
  const channel = Number($("step-channel").value);
  const params = `layer=${encodeURIComponent(layer.name)}&channel=${channel}&row=${row}&col=${col}`;
  const step = await (await api(`/api/inputs/${state.input}/conv-step?${params}`)).json();
  const shown = Math.min(Number($("step-in").value), step.in_channels.length - 1);
  $("step-in").max = step.in_channels.length - 1;
  const inputChannel = step.in_channels[shown];
  const imageKey = `${state.input}|${layer.name}|${inputChannel}`;
  if (!state.stepImage || state.stepImage.key !== imageKey) {
    const img = await setImage(new Image(), `/api/inputs/${state.input}/layer-input.png?layer=${encodeURIComponent(layer.name)}&channel=${inputChannel}`);
    state.stepImage = { key: imageKey, img };
  }
  state.step = step;
  drawStep(step, shown);
  showNumbers(step, shown);
  $("step-where").textContent = `row ${row}, col ${col} of ${layer.output_shape[0]}x${w}`;
}
function drawStep(step, shown) {
  const canvas = $("step-canvas"), ctx = canvas.getContext("2d");
  const [, h, w] = step.input_shape, p = step.pads;
  const rows = h + p.top + p.bottom, cols = w + p.left + p.right;
  const cell = canvas.width / Math.max(rows, cols);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#fde7c8"; // the zeros 'same' padding adds
  ctx.fillRect(0, 0, cols * cell, rows * cell);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(state.stepImage.img, p.left * cell, p.top * cell, w * cell, h * cell);
  if (cell >= 6) {
    ctx.strokeStyle = "rgba(128,128,128,.25)";
    ctx.lineWidth = 1;
    for (let i = 0; i <= rows; i++) { ctx.beginPath(); ctx.moveTo(0, i * cell); ctx.lineTo(cols * cell, i * cell); ctx.stroke(); }
    for (let j = 0; j <= cols; j++) { ctx.beginPath(); ctx.moveTo(j * cell, 0); ctx.lineTo(j * cell, rows * cell); ctx.stroke(); }
  }
  const [kh, kw] = step.kernel_size, [dh, dw] = step.dilation;
  const x = (step.origin[1] + p.left) * cell, y = (step.origin[0] + p.top) * cell;
  ctx.fillStyle = "rgba(79,70,229,.25)";
  ctx.fillRect(x, y, ((kw - 1) * dw + 1) * cell, ((kh - 1) * dh + 1) * cell);
  ctx.strokeStyle = "#4f46e5";
  ctx.lineWidth = 3;
  ctx.strokeRect(x, y, ((kw - 1) * dw + 1) * cell, ((kh - 1) * dh + 1) * cell);
  const padded = p.top + p.bottom + p.left + p.right;
  $("step-canvas-note").textContent = `Input channel ${step.in_channels[shown]} of the layer's input (${h}x${w})`
    + (padded ? `, with the ${step.padding} padding zeros in orange` : "")
    + `; the kernel moves ${step.strides.join("x")} pixel(s) per step.`;
}
function fillMatrix(table, values, mask) {
  table.replaceChildren();
  values.forEach((line, i) => {
    const tr = el("tr");
    line.forEach((v, j) => {
      const td = el("td", (mask && mask[i][j] ? "pad" : "") + (v < 0 ? " neg" : ""), v.toFixed(3));
      tr.append(td);
    });
    table.append(tr);
  });
}
function showNumbers(step, shown) {
  fillMatrix($("m-window"), step.window[shown], step.padding_mask);
  fillMatrix($("m-kernel"), step.kernel[shown]);
  fillMatrix($("m-products"), step.products[shown], step.padding_mask);
  const n = step.in_channels.length;
  const same = Math.abs(step.value - step.torch_value) <= 1e-4 * Math.max(1, Math.abs(step.torch_value));
  const box = $("step-sum");
  box.replaceChildren();
  const line = (label, value) => { const d = el("div"); d.append(el("span", "", label + " "), el("span", "eq", value)); box.append(d); };
  line(`Sum of the ${step.kernel_size.join("x")} products for input channel ${step.in_channels[shown]}:`, fmt(step.channel_sums[shown]));
  if (n > 1) line(`Sum over all ${n} input channels:`, fmt(step.sum));
  line("Plus the bias:", `${fmt(step.sum)} + ${fmt(step.bias)} = ${fmt(step.sum_plus_bias)}`);
  if (step.activation !== "linear") line(`After ${step.activation}:`, fmt(step.value));
  const check = el("div");
  check.append(el("span", "", `Feature map value torch computed at channel ${step.channel}, (${step.row}, ${step.col}): `),
               el("span", "eq", fmt(step.torch_value) + " "), el("span", same ? "ok" : "bad", same ? "✓ equal" : "✗ differs"));
  box.append(check);
  box.dataset.value = String(step.value);
  box.dataset.torch = String(step.torch_value);
  box.dataset.position = `${step.row},${step.col}`;
}
function stepBy(delta) {
  const pos = $("step-pos");
  const next = Number(pos.value) + delta;
  pos.value = next > Number(pos.max) ? 0 : Math.max(0, next);
  return loadStep().catch((e) => showError(e.message));
}
function togglePlay() {
  if (state.timer) { clearInterval(state.timer); state.timer = null; $("step-play").textContent = "▶ Play"; return; }
  $("step-play").textContent = "❚❚ Pause";
  state.timer = setInterval(() => stepBy(1), 700);
}

// ------------------------------------------------------------------ Grad-CAM and filters
async function renderCam() {
  if (!state.input) return;
  const url = `/api/inputs/${state.input}/gradcam.png?class_index=${$("cam-class").value}&layer=${encodeURIComponent($("cam-layer").value)}`;
  try { await setImage($("cam-img"), url); $("cam-img").dataset.cls = $("cam-class").value; } catch (e) { showError(e.message); }
}

// ------------------------------------------------------------------ any convolution's filter as heat maps
async function renderKernels() {
  const layer = $("k-layer").value;
  if (!layer) return;
  const q = `layer=${encodeURIComponent(layer)}&channel=${Number($("k-channel").value)}`;
  try {
    const k = await (await api(`/api/kernels?${q}`)).json();
    await setImage($("kernels"), `/api/kernels.png?${q}`);
    $("kernels").dataset.key = `${k.layer}|${k.channel}`;
    $("k-channel").max = layerByName(layer).output_shape[2] - 1;
    $("k-note").textContent = `Filter ${k.channel} of ${k.layer}: one ${k.kernel.join("x")} kernel for each of its ${k.in_channels} input channels`
      + (k.shown < k.in_channels ? ` (the first ${k.shown} shown)` : "")
      + `. Red weights add the input where they sit, blue ones subtract it, white ones ignore it; full colour is ±${fmt(k.max_abs)}.`;
  } catch (e) { showError(e.message); }
}

// ------------------------------------------------------------------ several inputs side by side
const MAX_COMPARED = 6;
function addCompared(key) {
  state.compare = state.compare.filter((k) => k !== key);
  state.compare.push(key);
  while (state.compare.length > MAX_COMPARED) state.compare.shift();
  return renderCompare();
}
async function addVariant(params) {
  if (!state.input) { showError("Pick an input first."); return; }
  showError("");
  try {
    if (!state.compare.includes(state.input)) await addCompared(state.input);
    const made = await (await api(`/api/inputs/${state.input}/variant?${params}`, { method: "POST" })).json();
    state.labels[made.key] = made;
    await addCompared(made.key);
  } catch (e) { showError(e.message); }
}
async function renderCompare() {
  const box = $("compare"), layer = $("compare-layer").value;
  const columns = await Promise.all(state.compare.map(async (key) => {
    const maps = await (await api(`/api/inputs/${key}/activations`)).json();
    return { key, maps };
  }));
  box.replaceChildren();
  for (const { key, maps } of columns) {
    const info = state.labels[key] || {};
    const col = el("div", "col");
    col.dataset.key = key;
    const img = el("img", "in");
    img.alt = info.label || key;
    const p = maps.probabilities, top = p.indexOf(Math.max(...p));
    const pred = el("div", "pred" + (info.true_class !== null && info.true_class !== undefined && info.true_class !== top ? " wrong" : ""),
                    `${maps.classes[top]} ${pct(p[top])}`);
    col.dataset.top = maps.classes[top];
    const remove = el("button", "remove", "×");
    remove.title = "take it off";
    remove.addEventListener("click", () => { state.compare = state.compare.filter((k) => k !== key); renderCompare(); });
    col.append(img, remove, el("div", "label", info.label || key), pred);
    if (layer && maps.layers.some((l) => l.name === layer)) {
      const grid = el("img", "grid");
      grid.alt = `feature maps of ${layer}`;
      col.append(grid);
      setImage(grid, `/api/inputs/${key}/maps.png?layer=${encodeURIComponent(layer)}`).catch(() => {});
    }
    box.append(col);
    setImage(img, `/api/inputs/${key}/image.png`).catch(() => {});
  }
  if (!state.compare.length) box.append(el("p", "muted empty", "Pick an input, then a shift or a rotation."));
  box.dataset.count = String(state.compare.length);
}

async function start() {
  try {
    const health = await (await fetch("/health")).json();
    $("key-row").hidden = !health.api_key_required;
    state.model = await (await api("/api/model")).json();
  } catch (e) {
    showError("This explorer needs an API key: enter it at the top right. (" + e.message + ")");
    $("api-key").addEventListener("change", start, { once: true });
    return;
  }
  const m = state.model;
  $("model-name").textContent = `${m.name}: ${m.classes.length} classes, input ${m.input_size.height}x${m.input_size.width}x${m.input_size.channels}`;
  $("input-size").textContent = `resized to ${m.input_size.height}x${m.input_size.width}, ${m.input_size.channels === 1 ? "grayscale" : m.input_size.channels + " channels"}`;
  $("input-how").textContent = `As the model sees it: ${m.input_size.height}x${m.input_size.width} pixels, `
    + `${m.input_size.channels === 1 ? "grayscale" : "colour"}, values divided by 255 to lie in [0, 1].`;
  $("notes").textContent = m.notes.join(" ");
  state.layers = (await (await api("/api/architecture")).json()).layers;
  renderLayers();
  renderGraph();
  const steppable = state.layers.filter((l) => l.steppable), maps = state.layers.filter((l) => l.feature_map);
  for (const l of steppable) $("step-layer").append(new Option(`${l.name} (${shapeText(l.output_shape)})`, l.name));
  for (const l of maps) $("cam-layer").append(new Option(l.name, l.name));
  for (const l of maps) $("compare-layer").append(new Option(`${l.name} (${shapeText(l.output_shape)})`, l.name));
  for (const l of steppable) $("k-layer").append(new Option(`${l.name} (${shapeText(l.output_shape)})`, l.name));
  $("k-layer").value = (steppable[1] || steppable[0] || {}).name || "";
  if (steppable.length) renderKernels();
  const convs = maps.filter((l) => l.steppable);
  $("cam-layer").value = (convs.length ? convs[convs.length - 1] : maps[maps.length - 1] || {}).name || "";
  $("compare-layer").value = $("cam-layer").value;
  $("draw-open").hidden = m.input_size.channels !== 1;
  m.classes.forEach((c, i) => $("cam-class").append(new Option(c, String(i))));
  $("stepper-card").hidden = steppable.length === 0;
  if (steppable.length) resetStepper();
  sandbox();
  setImage($("filters"), "/api/filters.png").catch(() => { $("filters").hidden = true; });
  const inputs = await loadInputs();
  if (inputs.length) await selectInput(inputs[0].key, inputs[0].label);
  document.body.dataset.ready = "1";
}

$("file-input").addEventListener("change", (e) => { if (e.target.files[0]) upload(e.target.files[0]); e.target.value = ""; });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); if (e.dataTransfer.files[0]) upload(e.dataTransfer.files[0]); });
$("step-layer").addEventListener("change", resetStepper);
$("step-channel").addEventListener("change", () => loadStep().catch((e) => showError(e.message)));
$("step-in").addEventListener("change", () => loadStep().catch((e) => showError(e.message)));
$("step-pos").addEventListener("input", () => loadStep().catch((e) => showError(e.message)));
$("step-next").addEventListener("click", () => stepBy(1));
$("step-prev").addEventListener("click", () => stepBy(-1));
$("step-play").addEventListener("click", togglePlay);
$("cam-class").addEventListener("change", renderCam);
for (const id of ["sb-size", "sb-kernel", "sb-stride", "sb-padding"]) $(id).addEventListener("change", sandbox);
$("sort-mean").addEventListener("change", () => { if (state.maps) renderMaps(state.maps); });
$("cam-layer").addEventListener("change", renderCam);
$("modal-close").addEventListener("click", () => { $("modal").hidden = true; });
$("draw-open").addEventListener("click", () => { $("draw-box").hidden = !$("draw-box").hidden; });
$("draw-clear").addEventListener("click", clearDrawing);
$("draw-use").addEventListener("click", async () => upload(await canvasFile($("draw-canvas"), "drawing.png")));
$("cam-open").addEventListener("click", () => (state.stream ? stopCamera() : startCamera()));
$("cam-stop").addEventListener("click", stopCamera);
$("cam-shot").addEventListener("click", () => cameraFrame().catch((e) => showError(e.message)));
$("sb-play").addEventListener("click", sandboxPlay);
$("sb-next").addEventListener("click", sandboxStep);
$("k-layer").addEventListener("change", () => { $("k-channel").value = 0; renderKernels(); });
$("k-channel").addEventListener("change", renderKernels);
document.querySelectorAll("[data-variant]").forEach((b) => b.addEventListener("click", () => addVariant(b.dataset.variant)));
$("compare-add").addEventListener("click", () => { if (state.input) addCompared(state.input).catch((e) => showError(e.message)); });
$("compare-layer").addEventListener("change", () => renderCompare().catch((e) => showError(e.message)));
setUpDrawing();
$("modal").addEventListener("click", (e) => { if (e.target === $("modal")) $("modal").hidden = true; });
start().catch((e) => showError(e.message));
