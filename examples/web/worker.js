// The classifier's and segmenter's inference, off the main thread: decodes the picked photo
// and runs the exported ONNX file (uint8 [H, W, 3] pixels in, logits out) in ONNX Runtime Web.
"use strict";

importScripts("worker-base.js");

let session = null;
let feeds = null;  // the last photo's input: the timing runs repeat it

async function load(modelUrl, backend) {
  loadRuntime(backend);
  await requireFile(
    modelUrl,
    "export one next to index.html, e.g. " +
      "`mobilevt export mobilevit_xxs --format onnx --include-preprocessing -o examples/web/model.onnx`",
  );
  session = await ort.InferenceSession.create(modelUrl, { executionProviders });
  return { threads, isolated: self.crossOriginIsolated, input: session.inputNames[0] };
}

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

serveRequests({ load: (m) => load(m.url, m.backend), run: (m) => run(m.file), time: (m) => medianRun(session, feeds, m.runs) });
