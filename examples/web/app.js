// The page: a photo picked (or dropped) goes to the worker (worker.js), which decodes it and
// runs the model; this thread only draws, so the page never freezes. Page parameters:
// ?model=FILE.onnx (default model.onnx), &labels=FILE (one class name per line, default
// labels.txt), &runs=N (time N runs after each result; default: only on the button).
"use strict";

const params = new URLSearchParams(window.location.search);
const modelUrl = new URL(params.get("model") || "model.onnx", window.location.href).href;
const labelsUrl = params.get("labels") || "labels.txt";
const autoRuns = Number(params.get("runs") || 0);
const TIMING_RUNS = 10;
// a trained classifier puts a few percent or more on its top class; random weights spread
// about 1/classes over all of them
const FLAT_TOP1 = 0.02;

const $ = (id) => document.getElementById(id);
const status = (text) => { $("status").textContent = text; };

// one request at a time to the worker, answered in order
const worker = new Worker("worker.js");
let nextId = 0;
const pending = new Map();
worker.onmessage = ({ data }) => {
  const { resolve, reject } = pending.get(data.id);
  pending.delete(data.id);
  data.ok ? resolve(data.value) : reject(new Error(data.error));
};
worker.onerror = (event) => {
  status("error: the worker did not start (" + (event.message || "worker.js") + "): serve the page with " +
    "`python examples/web/serve.py`");
};
function ask(type, fields = {}) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    worker.postMessage({ id, type, ...fields });
  });
}

async function loadLabels() {
  const response = await fetch(labelsUrl);
  if (!response.ok) return null;
  return (await response.text()).split("\n").filter((line) => line.length > 0);
}

function topK(logits, k) {
  const indices = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]);
  const max = Math.max(...logits);
  const total = logits.reduce((sum, value) => sum + Math.exp(value - max), 0);
  return indices.slice(0, k).map((index) => ({ index, probability: Math.exp(logits[index] - max) / total }));
}

function showTop5(top5, labels) {
  const table = $("top5");
  table.innerHTML = "<tr><th>class</th><th>probability</th></tr>";
  for (const { index, probability } of top5) {
    const row = table.insertRow();
    row.insertCell().textContent = labels && labels[index] ? labels[index] : String(index);
    row.insertCell().textContent = (100 * probability).toFixed(1) + " %";
  }
  const notes = [];
  if (!labels) notes.push("No labels.txt next to the page: class indices are shown (see the README for the command).");
  if (top5[0].probability < FLAT_TOP1) {
    notes.push(`The probabilities are flat (top class ${(100 * top5[0].probability).toFixed(1)} %): was the file ` +
      "exported with random weights (--weights none)? Export published or trained weights to see real classes.");
  }
  $("note").textContent = notes.join(" ");
}

const state = { ready: false, queued: null, labels: null, info: null, busy: false };

async function classify(file) {
  if (!state.ready) {  // picked while the model loads: run it once it is ready
    state.queued = file;
    status("photo queued: the model is still loading ...");
    return;
  }
  state.busy = true;
  const picked = performance.now();
  $("preview").src = URL.createObjectURL(file);
  status("running ...");
  try {
    const result = await ask("classify", { file });
    const top5 = topK(result.logits, 5);
    showTop5(top5, state.labels);
    const shownMs = performance.now() - picked;
    status(`decode ${result.decodeMs.toFixed(0)} ms, model ${result.modelMs.toFixed(1)} ms (first run; ` +
      `${state.info.threads} thread${state.info.threads > 1 ? "s" : ""}); result ${shownMs.toFixed(0)} ms after the pick`);
    publish({ ...result, top5: top5.map(({ index }) => index), names: top5.map(({ index }) => state.labels?.[index] ?? null),
      first_result_ms: shownMs, threads: state.info.threads, latency_ms: null });
    $("time").disabled = false;
    if (autoRuns > 0) await timeRuns(autoRuns);
  } catch (error) {
    status("error: " + error.message);
  } finally {
    state.busy = false;
  }
}

async function timeRuns(runs) {
  $("time").disabled = true;
  status(`timing ${runs} runs ...`);
  const { medianMs } = await ask("time", { runs });
  status(`model ${medianMs.toFixed(1)} ms (median of ${runs} runs, WebAssembly, ${state.info.threads} thread` +
    `${state.info.threads > 1 ? "s" : ""})`);
  const result = JSON.parse($("result").textContent);
  publish({ ...result, latency_ms: medianMs, timed_runs: runs });
  $("time").disabled = false;
}

// the machine-readable result (used by the tests)
function publish(result) {
  $("result").textContent = JSON.stringify(result);
  $("result").dataset.done = result.latency_ms !== null || autoRuns === 0 ? "true" : "";
}

function pickFrom(files) {
  const file = files && files[0];
  if (file) classify(file);
}

async function main() {
  $("model-name").textContent = modelUrl.split("/").pop();
  $("photo").addEventListener("change", (event) => {
    pickFrom(event.target.files);
    event.target.value = "";  // so that picking the same photo again runs it again
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => event.preventDefault());
  drop.addEventListener("drop", (event) => { event.preventDefault(); pickFrom(event.dataTransfer.files); });
  $("time").addEventListener("click", () => timeRuns(TIMING_RUNS).catch((error) => status("error: " + error.message)));
  try {
    const [info, labels] = await Promise.all([ask("load", { url: modelUrl }), loadLabels()]);
    Object.assign(state, { info, labels, ready: true });
    status(`ready (${info.threads} thread${info.threads > 1 ? "s" : ""}): pick a photo`);
    if (state.queued) classify(state.queued);
  } catch (error) {
    status("error: " + error.message);
  }
}

main();
