// cnnlab studio's page: plain JS over the JSON API of studio/app.py (no framework, nothing from outside).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { project: null, cls: null, classes: [], runs: [], offset: 0, total: 0, loading: false,
                selected: new Set(), settings: null, key: sessionStorage.getItem("cnnlab-key") || "",
                keyNeeded: false, stream: null, poll: null, cell: null, camera: null, recording: null,
                testCamera: null, importPoll: null };
const enc = encodeURIComponent;
const P = () => `/api/projects/${enc(state.project)}`;

function headers(extra) { return Object.assign(state.key ? { "X-API-Key": state.key } : {}, extra || {}); }

async function api(path, options) {
  options = options || {};
  const init = { method: options.method || "GET", headers: headers() };
  if (options.json !== undefined) { init.body = JSON.stringify(options.json); init.headers["Content-Type"] = "application/json"; }
  if (options.form) init.body = options.form;
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { detail: text }; }
  if (!response.ok) {
    const error = new Error((data && data.detail) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

function showError(error) { $("error-text").textContent = error.message || String(error); $("error").hidden = false; }
$("error-close").onclick = () => { $("error").hidden = true; };
function toast(text) { const t = $("toast"); t.textContent = text; t.hidden = false; clearTimeout(t.timer); t.timer = setTimeout(() => { t.hidden = true; }, 2600); }
async function guarded(work) { try { $("error").hidden = true; return await work(); } catch (e) { showError(e); } }
const pct = (v) => (v === null || v === undefined) ? "–" : `${(100 * v).toFixed(1)}%`;
function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") node.textContent = v; else if (k === "class") node.className = v;
    else if (k.startsWith("on")) node[k] = v; else node.setAttribute(k, v);
  }
  for (const child of children || []) node.append(child);
  return node;
}
// Images need the key too: with one, they are fetched with it and shown from a blob.
function setImage(img, url) {
  if (!state.key) { img.src = url; return; }
  fetch(url, { headers: headers() }).then((r) => r.blob()).then((b) => { img.src = URL.createObjectURL(b); });
}

// projects ---------------------------------------------------------------------------------------------
async function loadProjects() {
  const data = await api("/api/projects");
  const list = $("project-list");
  list.replaceChildren(...data.projects.map((p) => el("li", { class: p.name === state.project ? "active" : "",
    "data-project": p.name, onclick: () => openProject(p.name) },
    [el("span", { text: p.name }), el("span", { class: "count", text: `${p.images} photos` })])));
  if (!data.projects.length) list.append(el("li", { class: "muted small", text: "No projects yet." }));
}

async function openProject(name) {
  state.project = name; state.cls = null;
  $("welcome").hidden = true; $("project").hidden = false;
  $("project-title").textContent = name;
  $("crumb").textContent = `Project ${name}`;
  document.body.dataset.project = name;
  await loadProjects();
  await loadProject();
  showTab("images");
}

async function loadProject() {
  const data = await api(P());
  state.classes = data.classes; state.runs = data.runs;
  const list = $("class-list");
  list.replaceChildren(...data.classes.map((c) => el("button", { class: `class-chip${c.name === state.cls ? " active" : ""}`,
    "data-class": c.name, onclick: () => openClass(c.name) }, [el("b", { text: c.name }), el("span", { class: "n", text: c.images })])));
  if (!data.classes.length) list.append(el("span", { class: "muted small", text: "No classes yet: add one for each kind of thing to recognise." }));
  if (state.cls && !data.classes.some((c) => c.name === state.cls)) state.cls = null;
  if (!state.cls && data.classes.length) await openClass(data.classes[0].name);
  if (!data.classes.length) $("class-card").hidden = true;
  $("move-target").replaceChildren(...data.classes.filter((c) => c.name !== state.cls).map((c) => el("option", { value: c.name, text: `to ${c.name}` })));
  fillRunSelects();
  renderRuns();
}

$("new-project").onsubmit = (event) => { event.preventDefault(); guarded(async () => {
  const name = $("new-project-name").value.trim();
  await api("/api/projects", { method: "POST", json: { name } });
  $("new-project-name").value = "";
  await openProject(name);
}); };
$("rename-project").onclick = () => guarded(async () => {
  const name = prompt("New name of the project", state.project);
  if (!name || name === state.project) return;
  await api(P(), { method: "PATCH", json: { name } });
  await openProject(name);
});
$("delete-project").onclick = () => guarded(async () => {
  if (!confirm(`Delete project ${state.project}? It is moved to the trash folder, not erased.`)) return;
  await api(P(), { method: "DELETE" });
  state.project = null; $("project").hidden = true; $("welcome").hidden = false;
  $("crumb").textContent = "Train your own image classifier, on your own machine";
  await loadProjects();
});

// tabs -------------------------------------------------------------------------------------------------
function showTab(name) {
  for (const button of $("tabs").querySelectorAll("button")) button.classList.toggle("active", button.dataset.tab === name);
  for (const tab of ["images", "train", "evaluate", "test", "export"]) $(`tab-${tab}`).hidden = tab !== name;
  document.body.dataset.tab = name;
  if (name === "train") { fillSettings(); refreshJobs(); }
  if (name === "evaluate") loadEvaluation();
}
for (const button of $("tabs").querySelectorAll("button")) button.onclick = () => guarded(() => showTab(button.dataset.tab));

// classes and images -------------------------------------------------------------------------------------
$("new-class").onsubmit = (event) => { event.preventDefault(); guarded(async () => {
  const name = $("new-class-name").value.trim();
  await api(`${P()}/classes`, { method: "POST", json: { name } });
  $("new-class-name").value = "";
  state.cls = name;
  await loadProject(); await openClass(name);
}); };
$("rename-class").onclick = () => guarded(async () => {
  const name = prompt("New name of the class", state.cls);
  if (!name || name === state.cls) return;
  await api(`${P()}/classes/${enc(state.cls)}`, { method: "PATCH", json: { name } });
  state.cls = name; await loadProject(); await openClass(name);
});
$("merge-class").onclick = () => guarded(async () => {
  const into = prompt(`Move every photo of ${state.cls} into which class?`);
  if (!into) return;
  await api(`${P()}/classes/${enc(state.cls)}/merge`, { method: "POST", json: { into } });
  state.cls = into; await loadProject(); await openClass(into);
});
$("delete-class").onclick = () => guarded(async () => {
  if (!confirm(`Delete class ${state.cls} and its photos? They are moved to the project's trash folder.`)) return;
  await api(`${P()}/classes/${enc(state.cls)}`, { method: "DELETE" });
  state.cls = null; await loadProject();
});

async function openClass(name) {
  state.cls = name; state.offset = 0; state.total = 0; state.selected.clear();
  $("class-card").hidden = false;
  $("class-title").textContent = `Photos of ${name}`;
  document.body.dataset.class = name;
  for (const chip of $("class-list").children) chip.classList.toggle("active", chip.dataset.class === name);
  $("move-target").replaceChildren(...state.classes.filter((c) => c.name !== name).map((c) => el("option", { value: c.name, text: `to ${c.name}` })));
  $("grid").replaceChildren();
  updateSelection();
  await loadPage();
}

async function loadPage() {
  if (state.loading || (state.offset && state.offset >= state.total)) return;
  state.loading = true;
  try {
    const data = await api(`${P()}/classes/${enc(state.cls)}/images?offset=${state.offset}&limit=120`);
    state.total = data.total;
    const base = `${P()}/classes/${enc(state.cls)}/thumbs/`;
    for (const name of data.images) {
      const img = el("img", { alt: name, loading: "lazy" });
      setImage(img, base + enc(name));
      const tile = el("div", { class: "thumb", "data-name": name, title: name, onclick: () => toggle(tile, name) }, [img]);
      $("grid").append(tile);
    }
    state.offset += data.images.length;
    $("grid-count").textContent = `${state.total} photo${state.total === 1 ? "" : "s"}`;
    $("grid-more").textContent = state.offset < state.total ? "scroll for more…" : "";
  } finally { state.loading = false; }
}
new IntersectionObserver((entries) => { if (entries[0].isIntersecting && state.cls) guarded(loadPage); }).observe($("grid-more"));

function toggle(tile, name) {
  if (state.selected.has(name)) state.selected.delete(name); else state.selected.add(name);
  tile.classList.toggle("selected", state.selected.has(name));
  updateSelection();
}
function updateSelection() {
  const n = state.selected.size;
  $("selected-count").textContent = n ? `${n} selected` : "click photos to select them";
  $("move-selected").disabled = $("delete-selected").disabled = !n;
}
$("move-selected").onclick = () => guarded(async () => {
  const to = $("move-target").value;
  await api(`${P()}/classes/${enc(state.cls)}/move`, { method: "POST", json: { images: [...state.selected], to } });
  toast(`Moved ${state.selected.size} photo(s) to ${to}`);
  await loadProject(); await openClass(state.cls);
});
$("delete-selected").onclick = () => guarded(async () => {
  if (!confirm(`Delete ${state.selected.size} photo(s)? They go to the project's trash folder.`)) return;
  await api(`${P()}/classes/${enc(state.cls)}/delete`, { method: "POST", json: { images: [...state.selected] } });
  await loadProject(); await openClass(state.cls);
});

// uploads: batches of up to the server's limits; a refused batch is sent again file by file for each file's reason
async function upload(files) {
  files = files.filter((f) => f.size !== undefined);
  if (!files.length || !state.cls) return;
  const limits = state.settings.limits, status = $("upload-status");
  let done = 0, added = 0, duplicates = 0;
  const refused = [];
  status.hidden = false;
  delete status.dataset.added; delete status.dataset.refused;
  const bar = el("div"), line = el("div");
  status.replaceChildren(line, el("div", { class: "progress" }, [bar]));
  const send = async (batch) => {
    const form = new FormData();
    for (const f of batch) form.append("files", f, f.name);
    const data = await api(`${P()}/classes/${enc(state.cls)}/images`, { method: "POST", form });
    added += data.added; duplicates += data.stored.length - data.added;
  };
  const batches = [];
  let batch = [], bytes = 0;
  for (const f of files) {
    if (batch.length && (batch.length >= limits.max_files || bytes + f.size > limits.max_bytes * 0.9)) { batches.push(batch); batch = []; bytes = 0; }
    batch.push(f); bytes += f.size;
  }
  if (batch.length) batches.push(batch);
  for (const b of batches) {
    try { await send(b); } catch (e) {
      if (b.length === 1) refused.push([b[0].name, e.message]);
      else for (const f of b) { try { await send([f]); } catch (e2) { refused.push([f.name, e2.message]); } }
    }
    done += b.length;
    line.textContent = `Adding photos: ${done} of ${files.length}`;
    bar.style.width = `${100 * done / files.length}%`;
  }
  line.textContent = `Added ${added} photo${added === 1 ? "" : "s"}` + (duplicates ? `, ${duplicates} already in the project (kept once)` : "") +
    (refused.length ? `; ${refused.length} refused:` : ".");
  status.dataset.added = added; status.dataset.refused = refused.length;
  const list = el("ul", { class: "check-list" }, refused.map(([name, why]) => el("li", { class: "bad", text: `${name}: ${why}` })));
  status.append(list);
  await loadProject(); await openClass(state.cls);
  await loadProjects();
}
$("file-input").onchange = (event) => guarded(async () => { await upload([...event.target.files]); event.target.value = ""; });

async function filesOfEntry(entry) {  // a dropped folder: every file under it
  if (entry.isFile) return [await new Promise((ok, fail) => entry.file(ok, fail))];
  const reader = entry.createReader(), found = [];
  for (;;) {
    const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
    if (!batch.length) break;
    for (const child of batch) found.push(...await filesOfEntry(child));
  }
  return found;
}
function dropZone(zone, take) {
  zone.ondragover = (event) => { event.preventDefault(); zone.classList.add("over"); };
  zone.ondragleave = () => zone.classList.remove("over");
  zone.ondrop = (event) => { event.preventDefault(); zone.classList.remove("over"); guarded(async () => {
    const entries = [...event.dataTransfer.items].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
    const files = entries.length ? (await Promise.all(entries.map(filesOfEntry))).flat() : [...event.dataTransfer.files];
    await take(files);
  }); };
}
dropZone($("drop"), upload);
document.addEventListener("paste", (event) => {
  const files = [...(event.clipboardData || {}).files || []];
  if (files.length && document.body.dataset.tab === "images") guarded(() => upload(files));
});

// webcam: hold the button to take photos at the chosen rate; they are added to the class when it is let go
async function openCamera(video) {
  const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  video.srcObject = stream; video.hidden = false;
  return stream;
}
function closeCamera(stream, video) {
  if (stream) stream.getTracks().forEach((t) => t.stop());
  video.hidden = true; video.srcObject = null;
  return null;
}
function frameFile(video, name) {
  const canvas = el("canvas");
  canvas.width = video.videoWidth; canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  return new Promise((ok) => canvas.toBlob((b) => ok(new File([b], name, { type: "image/jpeg" })), "image/jpeg", 0.92));
}
$("cam-toggle").onclick = () => guarded(async () => {
  if (state.camera) { state.camera = closeCamera(state.camera, $("cam-video")); $("cam-controls").hidden = true; $("cam-toggle").textContent = "◉ Webcam"; return; }
  try { state.camera = await openCamera($("cam-video")); } catch (e) {
    throw new Error(`the camera did not start (${e.name || e.message}): allow it in the browser, or add photos from files`);
  }
  $("cam-controls").hidden = false; $("cam-toggle").textContent = "Stop the camera";
});
function startRecording(event) {
  event.preventDefault();
  if (state.recording || !state.camera) return;
  const video = $("cam-video"), frames = [], stamp = Date.now();
  const take = async () => {
    if (!video.videoWidth) return;
    frames.push(await frameFile(video, `webcam-${stamp}-${String(frames.length).padStart(4, "0")}.jpg`));
    $("cam-count").textContent = `${frames.length} photo${frames.length === 1 ? "" : "s"}…`;
  };
  state.recording = { frames, timer: setInterval(take, 1000 / Number($("cam-rate").value)) };
  take();
  $("cam-hold").classList.add("recording"); $("cam-hold").textContent = "Recording… let go to add";
}
function stopRecording() {
  const recording = state.recording;
  if (!recording) return;
  clearInterval(recording.timer); state.recording = null;
  $("cam-hold").classList.remove("recording"); $("cam-hold").textContent = "Hold to record";
  $("cam-count").textContent = "";
  setTimeout(() => guarded(() => upload(recording.frames)), 50);  // the last frame's blob is ready by then
}
$("cam-hold").addEventListener("pointerdown", startRecording);
for (const end of ["pointerup", "pointerleave", "pointercancel"]) $("cam-hold").addEventListener(end, stopRecording);

// import of a folder or archive on the server's disk: a background job, followed until it ends
$("import-form").onsubmit = (event) => { event.preventDefault(); guarded(async () => {
  const path = $("import-path").value.trim();
  if (!path) throw new Error("type the full path of a folder or archive on this computer first");
  const job = await api(`${P()}/import`, { method: "POST", json: { path } });
  followImport(job);
}); };
function followImport(job) {
  const status = $("import-status"), line = el("div"), bar = el("div");
  status.hidden = false;
  status.replaceChildren(line, el("div", { class: "progress" }, [bar]));
  clearInterval(state.importPoll);
  const show = async (j) => {
    bar.style.width = `${j.total ? 100 * j.done / j.total : 100}%`;
    status.dataset.state = j.state;
    if (j.state === "running") { line.textContent = `Importing ${j.source}: ${j.done} of ${j.total} files, ${j.added} added`; return; }
    clearInterval(state.importPoll); state.importPoll = null;
    line.textContent = `Imported ${j.source}: ${j.added} photo${j.added === 1 ? "" : "s"} added` +
      (j.duplicates ? `, ${j.duplicates} already in the project (kept once)` : "") +
      (j.refused_count ? `, ${j.refused_count} refused` : "") + (j.missing_count ? `, ${j.missing_count} missing` : "") +
      (j.error ? `; stopped: ${j.error}` : ".");
    status.dataset.added = j.added; status.dataset.refused = j.refused_count;
    status.append(el("ul", { class: "check-list" }, j.refused.slice(0, 20).map((r) => el("li", { class: "bad", text: `${r.file}: ${r.reason}` }))));
    await loadProject(); await loadProjects();
  };
  show(job);
  const [project, name] = job.id.split("/");
  state.importPoll = setInterval(() => guarded(async () => show(await api(`/api/projects/${enc(project)}/imports/${enc(name)}`))), 700);
}

$("run-check").onclick = () => guarded(async () => {
  $("check-result").textContent = "Checking…";
  const report = await api(`${P()}/check`);
  const items = [...report.errors.map((t) => ["err", t]), ...report.problems.map((t) => ["warn", t])];
  const out = $("check-result");
  out.className = "";
  out.replaceChildren(items.length
    ? el("div", { text: report.ok ? "Training would run, but these need a look:" : "Training would fail:" })
    : el("div", { class: "check-ok", text: "✓ No problems found: every photo opens, no photo is in two classes." }));
  if (items.length) out.append(el("ul", { class: "check-list" }, items.map(([k, t]) => el("li", { class: k, text: t }))));
  out.append(...checkImages(report));
  out.dataset.ok = report.ok;
});
// The photos behind the findings, each with a button to move it to the trash: the same photo twice, and files
// that do not open (put in the folders from outside the studio).
function checkImages(report) {
  const trash = (path, figure) => guarded(async () => {
    const [cls, name] = [path.slice(0, path.indexOf("/")), path.slice(path.indexOf("/") + 1)];
    await api(`${P()}/classes/${enc(cls)}/delete`, { method: "POST", json: { images: [name] } });
    figure.remove(); toast(`${path} moved to the project's trash`);
    await loadProject();
  });
  const figure = (path, picture, note) => {
    const f = el("div", { class: "figure", "data-path": path }, [picture, el("div", { class: "small", text: path })]);
    if (note) f.append(el("div", { class: "muted small", text: note }));
    f.append(el("button", { class: "ghost danger delete", text: "Delete", onclick: () => trash(path, f) }));
    return f;
  };
  const thumb = (path) => {
    const img = el("img", { alt: path, loading: "lazy" });
    const cut = path.indexOf("/");
    setImage(img, `${P()}/classes/${enc(path.slice(0, cut))}/thumbs/${enc(path.slice(cut + 1))}`);
    return img;
  };
  const found = [];
  const d = report.duplicates || {};
  for (const group of [...(d.across_classes || []), ...(d.within_class || [])]) {
    found.push(el("h3", { text: "The same photo, more than once" }),
               el("div", { class: "grid wide" }, group.map((path) => figure(path, thumb(path)))));
  }
  if ((report.undecodable || []).length) {
    found.push(el("h3", { text: "Files that do not open as images" }),
               el("div", { class: "grid wide" }, report.undecodable.map((b) => figure(b.path, el("div", { class: "broken", text: "✗" }), b.reason))));
  }
  return found;
}

// training -------------------------------------------------------------------------------------------------
function fillSettings() {
  fillModels();
  if ($("epochs").value) return;
  const d = state.settings.defaults;
  $("recipe").value = d.recipe; $("epochs").value = d.epochs; $("image-size").value = d.image_size;
}
$("recipe").onchange = () => {
  const transfer = $("recipe").value === "transfer";
  $("epochs").value = transfer ? 30 : 20; $("image-size").value = transfer ? 224 : 64;
};
function fillModels() {  // every registered model, as "seed:NAME" choices of the Model select
  if ($("model-options").children.length) return;
  for (const name of state.settings.models || []) $("model-options").append(el("option", { value: `seed:${name}`, text: name }));
}
function modelLabel(settings) {
  return settings.recipe === "transfer" ? "EfficientNet-Lite0" : settings.model || "small CNN";
}
$("train").onclick = () => guarded(async () => {
  const [recipe, model] = $("recipe").value.split(":");
  const body = { recipe, model: model || null, epochs: Number($("epochs").value), image_size: Number($("image-size").value),
                 augment: $("augment").value || null };
  await api(`${P()}/train`, { method: "POST", json: body });
  toast("Training queued");
  refreshJobs();
});

function refreshJobs() {
  if (state.key) {  // EventSource cannot send the key: poll instead
    clearInterval(state.poll);
    const tick = () => api("/api/jobs").then(renderJobs).catch(showError);
    tick(); state.poll = setInterval(tick, 1500);
    return;
  }
  if (state.stream) state.stream.close();
  state.stream = new EventSource("/api/jobs/stream");
  state.stream.onmessage = (event) => renderJobs(JSON.parse(event.data));
  state.stream.onerror = () => { state.stream.close(); state.stream = null; };  // the stream ends when the queue is idle
}

let lastFinished = "";
function renderJobs(data) {
  const jobs = data.jobs.filter((j) => j.project === state.project).reverse();
  const active = data.jobs.filter((j) => j.state === "running" || j.state === "queued");
  $("job-pill").hidden = !active.length;
  $("job-pill").textContent = active.length ? `training: ${active[0].project} (${active.length} in queue)` : "";
  const box = $("jobs");
  box.replaceChildren(...jobs.map(jobCard));
  if (!jobs.length) box.append(el("div", { class: "muted small", text: "Nothing trained yet. Press Train." }));
  const finished = data.jobs.filter((j) => j.state === "done").map((j) => j.id).join(",");
  if (finished !== lastFinished) { lastFinished = finished; if (state.project) loadProject().catch(showError); }
}

function jobCard(job) {
  const h = job.history, last = h[h.length - 1] || {};
  const done = h.length, planned = job.epochs_planned;
  const title = el("div", { class: "title" }, [el("b", { text: job.run }), el("span", { class: `badge ${job.state}`, text: job.state }),
    el("span", { class: "muted small", text: `${modelLabel(job.settings)} · ${job.settings.image_size}px` })]);
  let status;
  if (job.state === "done") status = `finished in ${job.elapsed_s.toFixed(0)} s after ${done} epochs`;
  else if (job.state === "running") status = done ? `epoch ${done} of at most ${planned}` + (job.seconds_left !== null ? ` · about ${Math.ceil(job.seconds_left)} s left` : "") : "preparing the photos…";
  else if (job.state === "queued") status = job.resume ? "waiting to resume" : "waiting for the job before it";
  else status = job.error || job.state;
  const progress = el("div", { class: "progress" }, [el("div", { style: `width:${job.state === "done" ? 100 : 100 * done / Math.max(planned, 1)}%` })]);
  const numbers = el("div", { class: "small" }, [
    job.test_accuracy !== null ? el("span", { class: "acc", "data-accuracy": job.test_accuracy, text: `${pct(job.test_accuracy)} test accuracy` })
      : el("span", { class: "muted", text: last.val_accuracy !== undefined ? `validation accuracy ${pct(last.val_accuracy)}` : "" })]);
  const buttons = el("div", { class: "actions" });
  if (job.state === "running" || job.state === "queued") buttons.append(el("button", { class: "ghost danger", text: "Stop",
    onclick: () => guarded(async () => { await api(`/api/jobs/${enc(job.project)}/${enc(job.run)}/stop`, { method: "POST" }); refreshJobs(); }) }));
  if (job.resumable) buttons.append(el("button", { class: "ghost", text: "Resume",
    onclick: () => guarded(async () => { await api(`/api/jobs/${enc(job.project)}/${enc(job.run)}/resume`, { method: "POST" }); refreshJobs(); }) }));
  if (job.state === "done") buttons.append(el("button", { class: "ghost", text: "See results", onclick: () => { $("eval-run").value = job.run; showTab("evaluate"); } }));
  const left = el("div", {}, [title, el("div", { class: "small", text: status }), progress, numbers, buttons,
    el("div", { class: "log mono", text: job.state === "failed" ? job.log : "" })]);
  const accuracy = el("canvas", { width: 520, height: 240, class: "curve-accuracy" });
  const loss = el("canvas", { width: 520, height: 240, class: "curve-loss" });
  drawCurves(accuracy, h);
  drawCurves(loss, h, "loss");
  return el("div", { class: "job", "data-job": job.id, "data-state": job.state }, [left, el("div", { class: "curves" }, [accuracy, loss])]);
}

function drawCurves(canvas, history, what = "accuracy") {  // accuracy (0..1) or loss (0..its largest) per epoch, training and validation
  const g = canvas.getContext("2d"), W = canvas.width, H = canvas.height, pad = 28;
  const keys = what === "loss" ? ["loss", "val_loss"] : ["accuracy", "val_accuracy"];
  const top = what === "loss" ? Math.max(1e-9, ...history.flatMap((row) => keys.map((k) => row[k] || 0))) : 1;
  const label = (y) => what === "loss" ? (y * top).toPrecision(2) : `${y * 100}%`;
  g.clearRect(0, 0, W, H);
  g.strokeStyle = "#e3e7f0"; g.fillStyle = "#6b7386"; g.font = "20px system-ui";
  for (const y of [0, 0.5, 1]) { const py = H - pad - y * (H - 2 * pad); g.beginPath(); g.moveTo(pad, py); g.lineTo(W - 8, py); g.stroke(); g.fillText(label(y), 0, py - 2); }
  if (!history.length) { g.fillText(`${what} per epoch appears here`, pad + 10, H / 2); return; }
  const n = Math.max(history.length - 1, 1);
  for (const [key, color] of [[keys[0], "#a5b4fc"], [keys[1], "#4f46e5"]]) {
    g.strokeStyle = color; g.lineWidth = 4; g.beginPath();
    history.forEach((row, i) => { const x = pad + i / n * (W - pad - 8), y = H - pad - (row[key] || 0) / top * (H - 2 * pad); if (i) g.lineTo(x, y); else g.moveTo(x, y); });
    g.stroke();
  }
  g.fillStyle = "#111827"; g.fillText(what, pad + 60, 20);
  g.fillStyle = "#4f46e5"; g.fillText("validation", W - 120, 20); g.fillStyle = "#a5b4fc"; g.fillText("training", W - 220, 20);
}

function renderRuns() {
  const best = Math.max(-1, ...state.runs.map((r) => r.test_accuracy ?? -1));
  $("runs").replaceChildren(...state.runs.map((r) => el("tr", { class: r.test_accuracy !== null && r.test_accuracy === best ? "best" : "" }, [
    el("td", { text: r.name }), el("td", { text: r.model || "" }),
    el("td", { text: r.epochs_run && r.epochs ? `${r.epochs_run} of ${r.epochs}` : (r.epochs ?? "") }),
    el("td", { text: r.image_size ? `${r.image_size}px` : "" }), el("td", { text: r.augment || "none" }),
    el("td", {}, [el("span", { class: `badge ${r.state}`, text: r.state })]), el("td", { text: pct(r.test_accuracy) }),
    el("td", { text: r.test_loss != null ? r.test_loss.toPrecision(2) : "" }),
    el("td", { text: r.train_seconds != null ? `${Math.round(r.train_seconds)} s` : "" })])));
}
function fillRunSelects() {
  const finished = state.runs.filter((r) => r.finished);
  for (const id of ["eval-run", "test-run", "export-run"]) {
    const select = $(id), before = select.value;
    select.replaceChildren(...finished.map((r) => el("option", { value: r.name, text: `${r.name} · ${pct(r.test_accuracy)}` })));
    if (!finished.length) select.append(el("option", { value: "", text: "no finished run yet" }));
    if (finished.some((r) => r.name === before)) select.value = before;
  }
}

// evaluation -------------------------------------------------------------------------------------------------
async function loadEvaluation() {
  const run = $("eval-run").value;
  $("eval-empty").hidden = !!run; $("eval-body").hidden = !run;
  if (!run) return;
  const data = await api(`${P()}/runs/${enc(run)}/evaluation`);
  state.evaluation = data;
  $("eval-accuracy").textContent = pct(data.accuracy);
  $("eval-accuracy").dataset.value = data.accuracy;
  $("eval-count").textContent = data.test_images;
  $("per-class").replaceChildren(...data.per_class.map((c) => bar(c.class, c.accuracy, `${pct(c.accuracy)}`)));
  const m = $("matrix"), k = data.classes.length;
  const head = el("tr", {}, [el("th", { text: "right ↓ / said →" }), ...data.classes.map((c) => el("th", { text: c }))]);
  const max = Math.max(1, ...data.confusion.flat());
  const rows = data.confusion.map((row, a) => el("tr", {}, [el("th", { text: data.classes[a] }), ...row.map((n, p) => {
    const alpha = n ? 0.12 + 0.78 * n / max : 0, color = a === p ? `rgba(79,70,229,${alpha})` : `rgba(180,35,24,${alpha})`;
    const cell = el("td", { class: `${n ? "" : "zero"} ${a !== p && n ? "off" : ""}`, "data-cell": `${a},${p}`, text: n,
      style: `background:${color};${a === p && n / max > 0.5 ? "color:#fff" : ""}` });
    if (n) cell.onclick = () => showCell(a, p, cell);
    return cell;
  })]));
  m.replaceChildren(head, ...rows);
  $("eval-notes").textContent = data.notes.join(" ");
  renderMistakes(data);
  if (state.cell && k) { const again = m.querySelector(`[data-cell="${state.cell}"]`); if (again && again.textContent !== "0") showCell(...state.cell.split(",").map(Number), again); else $("cell").hidden = true; }
}
$("eval-run").onchange = () => guarded(loadEvaluation);

function bar(name, value, label) {
  return el("div", { class: "bar", "data-class": name, "data-value": value }, [el("span", { class: "name", text: name }),
    el("span", { class: "track" }, [el("span", { class: "fill", style: `width:${Math.max(0, Math.min(1, value)) * 100}%; display:block` })]),
    el("span", { class: "value", text: label })]);
}

function showCell(actual, predicted, cellNode) {
  const data = state.evaluation, images = data.cells[`${actual},${predicted}`] || [];
  state.cell = `${actual},${predicted}`;
  for (const td of $("matrix").querySelectorAll("td")) td.classList.toggle("picked", td === cellNode);
  $("cell").hidden = false;
  $("cell-title").textContent = `${images.length} photo(s) of ${data.classes[actual]} that the model called ${data.classes[predicted]}`;
  $("cell-images").replaceChildren(...images.map((image) => figure(image, data)));
}

function renderMistakes(data) {  // the photos the model got wrong while most sure, most sure first
  $("mistakes").replaceChildren(...data.mistakes.map((image) => figure(image, data)));
  $("mistakes-empty").hidden = data.mistakes.length > 0;
}

function figure(image, data) {  // a test photo with what the model said, and buttons to relabel or delete it
  const img = el("img", { alt: image.name });
  setImage(img, `${P()}/classes/${enc(image.class)}/thumbs/${enc(image.name)}`);
  const target = el("select", {}, data.classes.filter((c) => c !== image.class).map((c) => el("option", { value: c, text: c })));
  if (data.classes.includes(image.predicted) && image.predicted !== image.class) target.value = image.predicted;
  const wrong = image.predicted !== image.class;
  return el("div", { class: "figure", "data-name": image.name, "data-class": image.class }, [img,
    el("span", { class: wrong ? "wrong" : "right", text: `${image.class}, said ${image.predicted} (${pct(image.confidence)})` }),
    el("span", { class: "row" }, [target, el("button", { class: "ghost relabel", text: "Move",
      title: "this photo is in the wrong class: move it", onclick: () => guarded(async () => {
        await api(`${P()}/classes/${enc(image.class)}/move`, { method: "POST", json: { images: [image.name], to: target.value } });
        toast(`Moved to ${target.value}; train again to learn from it`);
        await loadEvaluation();
      }) }),
      el("button", { class: "ghost danger delete", text: "Delete", title: "not a photo of any class: move it to the project's trash",
        onclick: () => guarded(async () => {
          await api(`${P()}/classes/${enc(image.class)}/delete`, { method: "POST", json: { images: [image.name] } });
          toast("Moved to the project's trash; train again without it");
          await loadEvaluation();
        }) })])]);
}

// test -------------------------------------------------------------------------------------------------------
async function testPhoto(files) {
  const run = $("test-run").value, file = files[0];
  if (!run) throw new Error("train a model first: there is no finished run to test");
  if (!file) return;
  const form = new FormData();
  form.append("files", file, file.name);
  const data = await api(`${P()}/runs/${enc(run)}/predict`, { method: "POST", form });
  if ($("test-image").src.startsWith("blob:")) URL.revokeObjectURL($("test-image").src);
  $("test-image").src = URL.createObjectURL(file);
  $("test-result").hidden = false;
  $("test-result").dataset.tested = Number($("test-result").dataset.tested || 0) + 1;
  $("test-answer").textContent = `It looks like: ${data.top[0].class}`;
  $("test-answer").dataset.top = data.top[0].class;
  $("test-bars").replaceChildren(...data.top.map((t) => bar(t.class, t.probability, pct(t.probability))));
}
// live predictions from the webcam: a frame about every 700 ms while the camera is on
$("test-cam").onclick = () => guarded(async () => {
  const video = $("test-video");
  if (state.testCamera) {
    clearInterval(state.testCamera.timer); state.testCamera = closeCamera(state.testCamera.stream, video) || null;
    $("test-cam").textContent = "◉ Live from the webcam"; return;
  }
  if (!$("test-run").value) throw new Error("train a model first: there is no finished run to test");
  let stream;
  try { stream = await openCamera(video); } catch (e) {
    throw new Error(`the camera did not start (${e.name || e.message}): allow it in the browser, or test a photo file`);
  }
  let busy = false;
  const timer = setInterval(async () => {
    if (busy || !video.videoWidth) return;
    busy = true;
    try { await testPhoto([await frameFile(video, "webcam.jpg")]); } catch (e) { showError(e); } finally { busy = false; }
  }, 700);
  state.testCamera = { stream, timer };
  $("test-cam").textContent = "Stop the webcam";
});
$("test-input").onchange = (event) => guarded(async () => { await testPhoto([...event.target.files]); event.target.value = ""; });
dropZone($("test-drop"), testPhoto);

// export -----------------------------------------------------------------------------------------------------
$("export").onclick = () => guarded(async () => {
  const run = $("export-run").value;
  if (!run) throw new Error("train a model first: there is no finished run to export");
  $("export").disabled = true; $("export").textContent = "Exporting and checking…";
  try {
    const data = await api(`${P()}/runs/${enc(run)}/export`, { method: "POST" });
    const base = `${P()}/runs/${enc(run)}/files/`;
    const link = (file, title, sub) => el("a", { href: base + file, download: "" }, [el("b", { text: title }), el("span", { class: "muted small", text: sub })]);
    const parity = data.parity ? `Checked on ${data.parity.images} photos: the ONNX file gives the trained model's answer on ${pct(data.parity.top1_agreement)} of them (largest difference ${data.parity.max_abs_diff.toExponential(1)}).` : "Exported before; checked then.";
    $("export-result").replaceChildren(el("div", { class: "check-ok", text: `✓ ${parity}` }),
      el("div", { class: "downloads" }, [link(data.files.zip, "Zip for anywhere", `${(data.zip_bytes / 1e6).toFixed(1)} MB · ONNX + predict.py`),
        link(data.files.onnx, "ONNX model", `${(data.onnx_bytes / 1e6).toFixed(1)} MB`),
        link(data.files.model, "cnnlab model", "for cnnlab predict / serve")]));
    $("export-result").hidden = false;
  } finally { $("export").disabled = false; $("export").textContent = "Export"; }
});

$("export-int8").onclick = () => guarded(async () => {
  const run = $("export-run").value;
  if (!run) throw new Error("train a model first: there is no finished run to export");
  $("export-int8").disabled = true; $("export-int8").textContent = "Quantizing and checking…";
  try {
    const data = await api(`${P()}/runs/${enc(run)}/export`, { method: "POST", json: { quantize: "int8" } });
    const p = data.parity, acc = p.accuracy || {};
    const text = `int8 on ${p.test_images} test photos: same answer as fp32 on ${pct(p.top1_agreement)} of them; accuracy ` +
      `${pct(acc.int8)} (fp32 ${pct(acc.fp32)}); ${(data.int8_bytes / 1e6).toFixed(1)} MB instead of ${(p.fp32_bytes / 1e6).toFixed(1)} MB.`;
    const result = $("export-int8-result");
    result.dataset.agreement = p.top1_agreement;
    result.replaceChildren(el("div", { class: p.top1_agreement >= 0.95 ? "check-ok" : "check-warn", text: text }),
      el("div", { class: "downloads" }, [el("a", { href: `${P()}/runs/${enc(run)}/files/${data.files.int8}`, download: "" },
        [el("b", { text: "int8 ONNX model" }), el("span", { class: "muted small", text: `${(data.int8_bytes / 1e6).toFixed(1)} MB` })])]));
    result.hidden = false;
  } finally { $("export-int8").disabled = false; $("export-int8").textContent = "Smaller int8 ONNX"; }
});

// start ------------------------------------------------------------------------------------------------------
async function start() {
  const health = await (await fetch("/health")).json();
  state.keyNeeded = health.api_key_required;
  $("key-row").hidden = !state.keyNeeded;
  $("api-key").value = state.key;
  $("api-key").onchange = () => { state.key = $("api-key").value; sessionStorage.setItem("cnnlab-key", state.key); guarded(start); };
  if (state.keyNeeded && !state.key) { showError(new Error("this studio needs its API key: type it in the box at the top right")); return; }
  state.settings = await api("/api/settings");
  await loadProjects();
  refreshJobs();
  document.body.dataset.ready = "1";
}
guarded(start);
