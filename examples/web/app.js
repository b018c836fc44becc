// Runs an exported mobilevt classifier (uint8 [H, W, 3] pixels in, logits out) with ONNX
// Runtime Web. Page parameters: ?model=FILE.onnx (default model.onnx), &labels=FILE (one
// class name per line, default labels.txt), &runs=N (timed runs after one warm-up, default 10).
"use strict";

const params = new URLSearchParams(window.location.search);
const modelUrl = params.get("model") || "model.onnx";
const labelsUrl = params.get("labels") || "labels.txt";
const timedRuns = Number(params.get("runs") || 10);

// the WebAssembly files next to ort.min.js; one thread: a plain static server does not send
// the cross-origin isolation headers that threads need
ort.env.wasm.wasmPaths = new URL("ort/", window.location.href).href;
ort.env.wasm.numThreads = 1;

const status = (text) => { document.getElementById("status").textContent = text; };

async function loadLabels() {
  const response = await fetch(labelsUrl);
  if (!response.ok) return null;
  return (await response.text()).split("\n").filter((line) => line.length > 0);
}

// RGB bytes of an image file, decoded by the browser without colour management, so that
// the pixels are the file's own
async function rgbPixels(file) {
  const bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0);
  const rgba = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
  const rgb = new Uint8Array(bitmap.width * bitmap.height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i];
    rgb[j + 1] = rgba[i + 1];
    rgb[j + 2] = rgba[i + 2];
  }
  return { rgb, height: bitmap.height, width: bitmap.width };
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function topK(logits, k) {
  const indices = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]);
  const max = Math.max(...logits);
  const total = logits.reduce((sum, value) => sum + Math.exp(value - max), 0);
  return indices.slice(0, k).map((index) => ({ index, probability: Math.exp(logits[index] - max) / total }));
}

function show(top5, labels, latencyMs) {
  const table = document.getElementById("top5");
  table.innerHTML = "<tr><th>class</th><th>probability</th></tr>";
  for (const { index, probability } of top5) {
    const row = table.insertRow();
    row.insertCell().textContent = labels && labels[index] ? labels[index] : String(index);
    row.insertCell().textContent = (100 * probability).toFixed(1) + " %";
  }
  status(`latency ${latencyMs.toFixed(1)} ms (median of ${timedRuns} runs, WebAssembly, one thread)`);
}

async function classify(session, labels, file) {
  status("running ...");
  document.getElementById("preview").src = URL.createObjectURL(file);
  const { rgb, height, width } = await rgbPixels(file);
  const input = new ort.Tensor("uint8", rgb, [height, width, 3]);
  const feeds = { [session.inputNames[0]]: input };
  let output = await session.run(feeds);  // warm-up
  const times = [];
  for (let i = 0; i < timedRuns; i++) {
    const start = performance.now();
    output = await session.run(feeds);
    times.push(performance.now() - start);
  }
  const logits = Array.from(output[session.outputNames[0]].data);
  const top5 = topK(logits, 5);
  const latencyMs = times.length ? median(times) : NaN;
  show(top5, labels, latencyMs);
  const result = document.getElementById("result");
  result.textContent = JSON.stringify({
    top5: top5.map(({ index }) => index), names: top5.map(({ index }) => (labels ? labels[index] : null)),
    logits, latency_ms: latencyMs, height, width,
  });
  result.dataset.done = "true";
}

async function main() {
  document.getElementById("model-name").textContent = modelUrl;
  try {
    const [session, labels] = await Promise.all([
      ort.InferenceSession.create(modelUrl, { executionProviders: ["wasm"] }), loadLabels(),
    ]);
    status("ready: pick a photo");
    document.getElementById("photo").addEventListener("change", (event) => {
      const file = event.target.files[0];
      event.target.value = "";  // so that picking the same photo again runs it again
      if (file) classify(session, labels, file).catch((error) => status("error: " + error.message));
    });
  } catch (error) {
    status("error: " + error.message);
  }
}

main();
