// What the example pages share: the worker (worker.js) that decodes photos and runs the
// model, the photo picker and drop zone, a pick made while the model loads queued, the timing
// button, and the machine-readable result the tests read. Page parameters: ?model=FILE.onnx,
// &labels=FILE (one name per line), &runs=N (time N runs after each result; default: only on
// the button), &backend=webgpu (WebGPU where the browser has it; default WebAssembly).
"use strict";

const $ = (id) => document.getElementById(id);
const status = (text) => { $("status").textContent = text; };
const plural = (count, word) => `${count} ${word}${count === 1 ? "" : "s"}`;
const TIMING_RUNS = 10;

// requests to the worker, which answers them one at a time in order
function workerClient(script = "worker.js") {
  const worker = new Worker(script);
  let nextId = 0;
  const pending = new Map();
  worker.onmessage = ({ data }) => {
    const { resolve, reject } = pending.get(data.id);
    pending.delete(data.id);
    data.ok ? resolve(data.value) : reject(new Error(data.error));
  };
  worker.onerror = (event) => {
    status("error: the worker did not start (" + (event.message || script) + "): serve the page with " +
      "`python examples/web/serve.py`");
  };
  return (type, fields = {}) => {
    const id = nextId++;
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject });
      worker.postMessage({ id, type, ...fields });
    });
  };
}

// the names file is optional: without it (or unreachable) the pages show indices
async function loadLabels(url) {
  try {
    const response = await fetch(url);
    if (!response.ok) return null;
    return (await response.text()).split(/\r?\n/).filter((line) => line.length > 0);
  } catch {
    return null;
  }
}

// the machine-readable result (used by the tests)
function publish(result, waitingForTiming) {
  $("result").textContent = JSON.stringify(result);
  $("result").dataset.done = waitingForTiming ? "" : "true";
}

// the backend the page runs on: ?backend=webgpu where the browser has WebGPU, else
// WebAssembly on the CPU
const chosenBackend = () => new URLSearchParams(window.location.search).get("backend") || "wasm";
const backendName = (backend) => (backend === "webgpu" ? "WebGPU" : "WebAssembly");

// offers WebGPU beside WebAssembly when the browser has a WebGPU adapter; a change reloads
// the page on the chosen backend (a worker loads one ONNX Runtime build)
async function offerBackends() {
  const adapter = navigator.gpu ? await navigator.gpu.requestAdapter().catch(() => null) : null;
  $("backend-choice").dataset.checked = "true";  // the tests wait for the answer
  if (!adapter && chosenBackend() === "wasm") return;
  $("backend-choice").hidden = false;
  $("backend").value = chosenBackend();
  $("backend").addEventListener("change", () => {
    const params = new URLSearchParams(window.location.search);
    params.set("backend", $("backend").value);
    window.location.search = params.toString();
  });
}

// the controls the pages show: the model's name, the backend (where WebGPU is offered), the
// picker and drop zone, the timing button, the status line and a line for notes
function addControls() {
  $("controls").innerHTML = `
    <p>Model: <code id="model-name"></code></p>
    <p id="backend-choice" hidden><label for="backend">Runs on</label>
      <select id="backend"><option value="wasm">WebAssembly (CPU)</option><option value="webgpu">WebGPU</option></select></p>
    <div id="drop">
      <label class="button" for="photo">Pick a photo</label>
      <input type="file" id="photo" accept="image/*">
      <button class="button" id="time" type="button" disabled>Time ${TIMING_RUNS} runs</button>
      <span>or drop one here</span>
    </div>
    <p id="status">loading the model ...</p>
    <p id="note"></p>`;
  offerBackends();
}

// Wires the page: ``show(result, labels)`` draws one model output (``result.output``, its
// ``dims``, the photo's ``height`` and ``width``, the decode and model times) and returns
// the fields it adds to the published result.
function startPage({ defaultModel, defaultLabels, show }) {
  const params = new URLSearchParams(window.location.search);
  const modelUrl = new URL(params.get("model") || defaultModel, window.location.href).href;
  const labelsUrl = params.get("labels") || defaultLabels;
  const autoRuns = Number(params.get("runs") || 0);
  const ask = workerClient();
  const state = { ready: false, queued: null, labels: null, threads: 1, last: null, picks: 0 };

  async function timeRuns(runs) {
    const pick = state.picks;
    $("time").disabled = true;
    status(`timing ${runs} runs ...`);
    const { medianMs } = await ask("time", { runs });
    if (pick !== state.picks) return;  // another photo was picked meanwhile: the timing is of the older one
    status(`model ${medianMs.toFixed(1)} ms (median of ${runs} runs, ${backendName(chosenBackend())}, ` +
      `${plural(state.threads, "thread")})`);
    state.last = { ...state.last, latency_ms: medianMs, timed_runs: runs };
    publish(state.last, false);
    $("time").disabled = false;
  }

  async function pick(file) {
    if (!state.ready) {  // picked while the model loads: run it once it is ready
      state.queued = file;
      status("photo queued: the model is still loading ...");
      return;
    }
    const picked = performance.now();
    const pick = ++state.picks;
    if ($("preview").src) URL.revokeObjectURL($("preview").src);
    $("preview").src = URL.createObjectURL(file);
    status("running ...");
    try {
      const result = await ask("run", { file });
      if (pick !== state.picks) return;  // another photo was picked meanwhile: its result follows
      const drawn = await show(result, state.labels);
      const shownMs = performance.now() - picked;
      status(`decode ${result.decodeMs.toFixed(0)} ms, model ${result.modelMs.toFixed(1)} ms (first run; ` +
        `${plural(state.threads, "thread")}); shown ${shownMs.toFixed(0)} ms after the pick`);
      const { output, ...timings } = result;
      state.last = { ...timings, ...drawn, first_result_ms: shownMs, threads: state.threads, latency_ms: null };
      publish(state.last, autoRuns > 0);
      $("time").disabled = false;
      if (autoRuns > 0) await timeRuns(autoRuns);
    } catch (error) {
      if (pick === state.picks) status("error: " + error.message);
    }
  }

  const fromFiles = (files) => { if (files && files[0]) pick(files[0]); };
  addControls();
  $("model-name").textContent = modelUrl.split("/").pop();
  $("photo").addEventListener("change", (event) => {
    fromFiles(event.target.files);
    event.target.value = "";  // so that picking the same photo again runs it again
  });
  $("drop").addEventListener("dragover", (event) => event.preventDefault());
  $("drop").addEventListener("drop", (event) => { event.preventDefault(); fromFiles(event.dataTransfer.files); });
  $("time").addEventListener("click", () => timeRuns(TIMING_RUNS).catch((error) => status("error: " + error.message)));
  Promise.all([ask("load", { url: modelUrl, backend: chosenBackend() }), loadLabels(labelsUrl)])
    .then(([info, labels]) => {
      Object.assign(state, { labels, threads: info.threads, ready: true });
      status(`ready (${backendName(chosenBackend())}, ${plural(info.threads, "thread")}): pick a photo`);
      if (state.queued) pick(state.queued);
    })
    .catch((error) => status("error: " + error.message));
}
