// The VQA page's work, off the main thread: decodes the photo, pre-processes it and tokenizes
// the question (vilt.js), and runs the ViLT ONNX file (input_ids, attention_mask, pixel_values,
// pixel_mask -> logits) in ONNX Runtime Web, timing each stage.
"use strict";

importScripts("worker-base.js", "vilt.js");

const EXPORT_COMMAND =
  "export one next to vqa.html: `mobilevt export vilt_b32_vqa --format onnx -o examples/web/vqa.onnx` " +
  "(see the README for the vocabulary it needs)";

let tokenizer = null;
let maxLength = 40;
let rule = VILT_IMAGE_RULE;  // the model's image size rule (its preprocessor_config.json)
const sessions = new Map();  // the model file URL in use -> its session
let last = null;  // the last question's session and inputs: the timing runs repeat them

async function fetchJson(url) {
  await requireFile(url, EXPORT_COMMAND + " writes it beside the model");
  return (await fetch(url)).json();
}

// the runtime, the tokenizer files and the first model file's session (another file, e.g. a
// MobiVQA variant, replaces it when it is chosen)
async function load({ models, tokenizerUrl, configUrl, imageConfigUrl, backend }) {
  loadRuntime(backend);
  let tokenizers;
  try {
    tokenizers = await import(new URL("tokenizers/tokenizers.min.mjs", self.location.href).href);
  } catch (error) {
    throw new Error("the tokenizer library did not load from tokenizers/: run `npm ci --prefix examples/web` " +
      "and serve the page with `python examples/web/serve.py`");
  }
  const [document, config, imageConfig] = await Promise.all(
    [fetchJson(tokenizerUrl), fetchJson(configUrl), fetch(imageConfigUrl)]);
  // files exported before the rule was written beside them are ViLT-B/32's
  rule = imageConfig.ok ? imageRule(await imageConfig.json(), imageConfigUrl) : VILT_IMAGE_RULE;
  tokenizer = new tokenizers.Tokenizer(document, config);
  maxLength = config.model_max_length;
  if (!Number.isInteger(maxLength) || maxLength < 2) {
    throw new Error(`${configUrl} gives no model_max_length (the model's text length): ${EXPORT_COMMAND} writes it`);
  }
  await sessionFor(models[0]);  // another file when it is chosen
  return { threads, isolated: self.crossOriginIsolated, maxLength };
}

// one session at a time: two ViLT-B/32 files would hold 940 MB of a phone's memory
async function sessionFor(url) {
  if (!sessions.has(url)) {
    for (const [other, session] of sessions) {
      await session.release();
      sessions.delete(other);
      last = null;
    }
    await requireFile(url, EXPORT_COMMAND);
    const session = await ort.InferenceSession.create(url, { executionProviders });
    // one run while the page says "loading": the first run sets up the kernels and memory
    // (about twice a later run's time), which the first answer would otherwise wait for
    const side = rule.shorterSide;
    await session.run(modelInputs(encodeQuestion(tokenizer, "", maxLength),
      { values: new Float32Array(3 * side * side), height: side, width: side }));
    sessions.set(url, session);
  }
  return sessions.get(url);
}

const since = (start) => performance.now() - start;

// the four inputs of the ViLT file for one question's ids and one photo's pixel values
function modelInputs(ids, { values, height, width }) {
  const text = [1, ids.length];
  return {
    input_ids: new ort.Tensor("int64", BigInt64Array.from(ids, BigInt), text),
    attention_mask: new ort.Tensor("int64", new BigInt64Array(ids.length).fill(1n), text),
    pixel_values: new ort.Tensor("float32", values, [1, 3, height, width]),
    pixel_mask: new ort.Tensor("int64", new BigInt64Array(height * width).fill(1n), [1, height, width]),
  };
}

// the logits for one photo and question with the model file `model`, the inputs' sizes and
// the time of each stage
async function ask({ file, question, model }) {
  const session = await sessionFor(model);
  let start = performance.now();
  const { rgb, height, width } = await rgbPixels(file);
  const decodeMs = since(start);
  start = performance.now();
  const pixels = viltPixelValues(rgb, height, width, rule);
  const preprocessMs = since(start);
  start = performance.now();
  const ids = encodeQuestion(tokenizer, question, maxLength);
  const tokenizeMs = since(start);
  const feeds = modelInputs(ids, pixels);
  start = performance.now();
  const output = (await session.run(feeds))[session.outputNames[0]];
  const modelMs = since(start);
  last = { session, feeds };
  return {
    logits: Array.from(output.data), ids, height, width, pixelHeight: pixels.height, pixelWidth: pixels.width,
    decodeMs, preprocessMs, tokenizeMs, modelMs,
  };
}

function time({ runs }) {
  if (!last) throw new Error("ask a question first: the timing repeats the last one");
  return medianRun(last.session, last.feeds, runs);
}

serveRequests({ load, ask, time });
