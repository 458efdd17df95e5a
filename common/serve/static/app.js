// eyegc serve's page: choose a model, send one image, show what it predicts. No library, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
let models = [];
let maxUploadBytes = Infinity;

function show(element, visible) { element.hidden = !visible; }

function setError(message) {
  $("error").textContent = message || "";
  show($("error"), Boolean(message));
}

function fillSelect(select, options) {
  select.replaceChildren(...options.map(([value, text]) => new Option(text, value)));
}

function currentModel() { return models.find((m) => m.key === $("model").value); }

function onTaskChange() {
  const task = $("task").value;
  fillSelect($("model"), models.filter((m) => m.task === task).map((m) => [m.key, m.label]));
  onModelChange();
}

function onModelChange() {
  const model = currentModel();
  const modes = model ? model.tta : [];
  fillSelect($("tta"), modes.map((t) => [t, t]));
  if (modes.includes("flip")) { $("tta").value = "flip"; }
}

async function loadModels() {
  const answer = await fetch("/api/models");
  const body = await answer.json();
  models = body.models;
  maxUploadBytes = body.max_upload_bytes;
  const tasks = [...new Set(models.map((m) => m.task))];
  fillSelect($("task"), tasks.map((t) => [t, t]));
  onTaskChange();
}

function cell(text, numeric) {
  const td = document.createElement("td");
  td.textContent = text;
  if (numeric) { td.className = "num"; }
  return td;
}

function showAreas(result) {
  const table = $("areas");
  table.replaceChildren();
  const overlay = $("overlay");
  overlay.querySelectorAll("img.layer").forEach((img) => img.remove());
  result.model.classes.forEach((cls, k) => {
    const layer = document.createElement("img");
    layer.className = "layer";
    layer.id = "layer-" + cls.key;
    layer.alt = cls.name;
    layer.src = result.layers[k];
    layer.style.opacity = $("opacity").value / 100;
    overlay.appendChild(layer);
    const toggle = document.createElement("input");
    toggle.type = "checkbox";
    toggle.checked = true;
    toggle.id = "toggle-" + cls.key;
    toggle.addEventListener("change", () => { layer.hidden = !toggle.checked; });
    const label = document.createElement("label");
    label.style.flexDirection = "row";
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = cls.colour;
    label.append(toggle, swatch, cls.name);
    const row = document.createElement("tr");
    const first = document.createElement("td");
    first.appendChild(label);
    const area = result.areas[k];
    row.append(first, cell(area.pixels.toLocaleString() + " px", true), cell((100 * area.fraction).toFixed(2) + " %", true));
    table.appendChild(row);
  });
  show($("controls"), result.model.classes.length > 0);
}

function showGrades(result) {
  const table = $("grades");
  table.replaceChildren();
  (result.grades || []).forEach((grade) => {
    const row = document.createElement("tr");
    row.id = "grade-" + grade.key;
    const probabilities = grade.probabilities.map((p, g) => g + ": " + p.toFixed(3)).join(", ");
    row.append(cell(grade.name), cell("grade " + grade.grade), cell(probabilities));
    table.appendChild(row);
  });
  show(table, Boolean(result.grades));
}

function showResult(result) {
  $("base").src = result.image;
  showAreas(result);
  showGrades(result);
  $("timing").textContent = result.filename + ": " + result.size[1] + " × " + result.size[0] + " pixels, predicted in "
    + result.seconds.toFixed(2) + " s (" + result.model.members + " network(s), TTA " + result.tta + ")";
  for (const name of ["prediction", "probabilities", "report"]) {
    $("download-" + name).href = "/api/results/" + result.id + "/" + name;
  }
  show($("result"), true);
  document.body.dataset.resultId = result.id;
}

async function predict(event) {
  event.preventDefault();
  setError("");
  const file = $("file").files[0];
  if (!file) { setError("Choose an image first."); return; }
  if (file.size > maxUploadBytes) {  // the server refuses it too; this spares the upload
    setError(file.name + ": the image is " + (file.size / 2 ** 20).toFixed(1) + " MB; the page takes up to "
      + (maxUploadBytes / 2 ** 20).toFixed(0) + " MB (eyegc serve --max-upload-mb)");
    return;
  }
  const query = new URLSearchParams({ model: $("model").value, tta: $("tta").value, filename: file.name });
  $("predict").disabled = true;
  $("status").textContent = "Predicting " + file.name + " (uploads wait their turn) …";
  try {
    const answer = await fetch("/api/predict?" + query, { method: "POST", body: file });
    const body = await answer.json().catch(() => ({}));
    if (!answer.ok) {
      const detail = Array.isArray(body.detail) ? body.detail.map((d) => d.msg).join("; ") : body.detail;
      throw new Error(body.error || detail || "the server answered " + answer.status);
    }
    showResult(body);
    $("status").textContent = "Done.";
  } catch (error) {
    $("status").textContent = "";
    setError(error.message);
  } finally {
    $("predict").disabled = false;
  }
}

$("task").addEventListener("change", onTaskChange);
$("model").addEventListener("change", onModelChange);
$("opacity").addEventListener("input", () => {
  document.querySelectorAll("#overlay img.layer").forEach((img) => { img.style.opacity = $("opacity").value / 100; });
});
$("upload").addEventListener("submit", predict);
loadModels().catch((error) => setError("Cannot list the models: " + error.message));
