// The pages' inference, off the main thread: decodes the picked photo and runs the exported
// ONNX file (uint8 [H, W, 3] pixels in, logits out: a classifier's or a segmenter's) with ONNX Runtime Web's
// WebAssembly build (ort.wasm.min.js: the smallest build that has the CPU backend; the
// WebGPU-capable ort.min.js pulls a 29.5 MB .wasm instead of 14.8 MB). With cross-origin
// isolation (serve.py sends the headers) WebAssembly runs on several threads.
"use strict";

let session = null;
let threads = 1;

function loadRuntime() {
  try {
    importScripts("ort/ort.wasm.min.js");
  } catch (error) {
    throw new Error(
      "ONNX Runtime Web did not load from ort/: run `npm ci --prefix examples/web` and serve the page with " +
        "`python examples/web/serve.py` (it maps /ort/ to node_modules; a plain static server does not)",
    );
  }
  ort.env.wasm.wasmPaths = new URL("ort/", self.location.href).href;
  threads = self.crossOriginIsolated ? Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)) : 1;
  ort.env.wasm.numThreads = threads;
}

async function load(modelUrl) {
  loadRuntime();
  const head = await fetch(modelUrl, { method: "HEAD" });
  if (!head.ok) {
    throw new Error(
      `${modelUrl} is not here (HTTP ${head.status}): export one next to index.html, e.g. ` +
        "`mobilevt export mobilevit_xxs --format onnx --include-preprocessing -o examples/web/model.onnx`",
    );
  }
  session = await ort.InferenceSession.create(modelUrl, { executionProviders: ["wasm"] });
  return { threads, isolated: self.crossOriginIsolated, input: session.inputNames[0] };
}

// RGB bytes of an image file, decoded without colour management, so that the pixels are
// the file's own (as Python's decoders give them)
async function rgbPixels(file) {
  const bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgba = context.getImageData(0, 0, canvas.width, canvas.height).data;
  const rgb = new Uint8Array(canvas.width * canvas.height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i];
    rgb[j + 1] = rgba[i + 1];
    rgb[j + 2] = rgba[i + 2];
  }
  return { rgb, height: canvas.height, width: canvas.width };
}

let feeds = null;  // the last photo's input: the timing runs repeat it

// the model's first output for one photo, with its dims, and how long decoding and the model took
async function run(file) {
  const started = performance.now();
  const { rgb, height, width } = await rgbPixels(file);
  const decodeMs = performance.now() - started;
  feeds = { [session.inputNames[0]]: new ort.Tensor("uint8", rgb, [height, width, 3]) };
  const start = performance.now();
  const output = (await session.run(feeds))[session.outputNames[0]];
  const modelMs = performance.now() - start;
  return { output: Array.from(output.data), dims: output.dims, height, width, decodeMs, modelMs };
}

async function time(runs) {
  const times = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    await session.run(feeds);
    times.push(performance.now() - start);
  }
  times.sort((a, b) => a - b);
  return { medianMs: times[Math.floor(times.length / 2)], runs };
}

const handlers = { load: (message) => load(message.url), run: (m) => run(m.file), time: (m) => time(m.runs) };

// one request at a time, in the order they came: a timing run and a new photo never interleave
let queue = Promise.resolve();
self.onmessage = ({ data }) => {
  queue = queue.then(async () => {
    try {
      self.postMessage({ id: data.id, ok: true, value: await handlers[data.type](data) });
    } catch (error) {
      self.postMessage({ id: data.id, ok: false, error: error.message || String(error) });
    }
  });
};
