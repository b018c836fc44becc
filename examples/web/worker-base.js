// What the pages' workers share (importScripts("worker-base.js")): ONNX Runtime Web, photo
// decoding, and requests answered one at a time. The CPU backend loads the WebAssembly build
// (ort.wasm.min.js: the smallest build that has it, 14.8 MB of WebAssembly; the WebGPU-capable
// ort.min.js pulls 29.5 MB instead); the WebGPU backend, chosen on the page where the browser
// has WebGPU, loads ort.webgpu.min.js (28.7 MB). With cross-origin isolation (serve.py sends
// the headers) WebAssembly runs on several threads.
"use strict";

let threads = 1;
let executionProviders = ["wasm"];

const RUNTIMES = { wasm: "ort/ort.wasm.min.js", webgpu: "ort/ort.webgpu.min.js" };

function loadRuntime(backend = "wasm") {
  if (!Object.hasOwn(RUNTIMES, backend)) throw new Error(`unknown backend ${backend}: use wasm or webgpu`);
  if (backend === "webgpu" && !self.navigator.gpu) {
    throw new Error("this browser has no WebGPU here: open the page without ?backend=webgpu");
  }
  try {
    importScripts(RUNTIMES[backend]);
  } catch (error) {
    throw new Error(
      "ONNX Runtime Web did not load from ort/: run `npm ci --prefix examples/web` and serve the page with " +
        "`python examples/web/serve.py` (it maps /ort/ to node_modules; a plain static server does not)",
    );
  }
  ort.env.wasm.wasmPaths = new URL("ort/", self.location.href).href;
  threads = self.crossOriginIsolated ? Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)) : 1;
  ort.env.wasm.numThreads = threads;
  executionProviders = [backend];
}

// fails with `command` (what to run to make the file) when `url` is not served
async function requireFile(url, command) {
  const head = await fetch(url, { method: "HEAD" });
  if (!head.ok) throw new Error(`${url} is not here (HTTP ${head.status}): ${command}`);
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

// the median of `runs` runs of `session` on `feeds`
async function medianRun(session, feeds, runs) {
  const times = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    await session.run(feeds);
    times.push(performance.now() - start);
  }
  times.sort((a, b) => a - b);
  return { medianMs: times[Math.floor(times.length / 2)], runs };
}

// answers the page's requests ({id, type, ...}) with handlers[type], one at a time in the
// order they came: a timing run and a new photo never interleave
function serveRequests(handlers) {
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
}
