// The VQA page (vqa.html): a photo and a question in, ViLT's top-5 answers out, with the time
// of each stage. Page parameters: ?models=A.onnx,B.onnx (default vqa.onnx and, if exported,
// vqa-mobivqa.onnx: the files the selector offers; the first one's tokenizer and answers are
// used), &runs=N (time N model runs after each answer; default: only on the button),
// &backend=webgpu (WebGPU where the browser has it; default WebAssembly).
// Each model file's side files (`mobilevt export` writes them): NAME.tokenizer.json,
// NAME.tokenizer_config.json, NAME.preprocessor_config.json (the image size rule),
// NAME.answers.txt and NAME.onnx.report.json (its MobiVQA settings).
"use strict";

const DEFAULT_MODELS = "vqa.onnx,vqa-mobivqa.onnx";
const EXPORT_HINT = "export one: `mobilevt export vilt_b32_vqa --format onnx -o examples/web/vqa.onnx` " +
  "(and, for the MobiVQA choice, the same with --prune-layer/--exit-layer to vqa-mobivqa.onnx; see the README)";
const STAGES = [["decodeMs", "decode the photo"], ["preprocessMs", "resize and normalise"],
  ["tokenizeMs", "tokenize the question"], ["modelMs", "ViLT (first run)"]];

const stemOf = (url) => url.replace(/\.onnx$/, "");
const percent = (fraction) => `${Math.round(100 * fraction)} %`;

// what a file's MobiVQA settings do, from its export report: a short name for the selector
// and a sentence (null: no report)
async function describe(url) {
  try {
    const response = await fetch(url + ".report.json");
    if (!response.ok) return null;
    const { details } = await response.json();
    const softmax = details.answer_scores === "softmax";
    const { token_pruning: pruning, early_exit: exit } = details.mobivqa;
    const short = [];
    const long = [];
    if (details.quantization) {
      short.push("int8");
      long.push("int8 linears (dynamic quantization)");
    }
    if (pruning) {
      short.push(`${percent(pruning.keep_ratio)} tokens`);
      long.push(`keeps ${percent(pruning.keep_ratio)} of the image tokens after layer ${pruning.after_layer}`);
    }
    if (exit && exit.mode === "fixed") {
      short.push(`exit ${exit.layer}`);
      long.push(`exits after layer ${exit.layer}`);
    } else if (exit) {
      const how = exit.mode === "confidence" ? `at confidence ${exit.threshold}` : "where its predictor says";
      short.push(`${exit.mode} exit`);
      long.push(`exits early ${how}`);
    }
    if (short.length === 0) return { label: "full model", sentence: "The full model.", softmax };
    const mobivqa = pruning || exit ? "MobiVQA" : "full model";
    return { label: `${mobivqa}: ${short.join(", ")}`, sentence: `${mobivqa}: ${long.join(" and ")}.`, softmax };
  } catch {
    return null;
  }
}

// the model files that are served, each with its label
async function findModels(urls) {
  const found = [];
  for (const url of urls) {
    const head = await fetch(url, { method: "HEAD" }).catch(() => null);
    const name = url.split("/").pop();
    if (head && head.ok) found.push({ url, name, ...((await describe(url)) || { label: name, sentence: "" }) });
  }
  return found;
}

// the k best answers with their scores: sigmoid for ViLT's VQA head, softmax for a model
// trained with cross-entropy over its answers (its export report says "answer_scores")
function topAnswers(logits, answers, k, softmax) {
  const largest = Math.max(...logits);
  const exps = logits.map((logit) => Math.exp(logit - largest));
  const total = exps.reduce((sum, e) => sum + e, 0);
  const scores = softmax ? exps.map((e) => e / total) : logits.map((logit) => 1 / (1 + Math.exp(-logit)));
  const order = Array.from(scores.keys()).sort((a, b) => scores[b] - scores[a]).slice(0, k);
  return order.map((index) => ({ index, answer: answers?.[index] ?? String(index), score: scores[index] }));
}

function showAnswers(top) {
  const table = $("answers");
  table.innerHTML = "<tr><th>answer</th><th>score</th></tr>";
  for (const { answer, score } of top) {
    const row = table.insertRow();
    row.insertCell().textContent = answer;
    row.insertCell().textContent = score.toFixed(3);
  }
}

function showStages(result) {
  const table = $("stages");
  table.innerHTML = "<tr><th>stage</th><th>ms</th></tr>";
  for (const [key, name] of STAGES) {
    const row = table.insertRow();
    row.insertCell().textContent = name;
    row.insertCell().textContent = result[key].toFixed(1);
  }
}

function startVqaPage() {
  const params = new URLSearchParams(window.location.search);
  const urls = (params.get("models") || DEFAULT_MODELS).split(",").map((name) => new URL(name, location.href).href);
  const autoRuns = Number(params.get("runs") || 0);
  const worker = workerClient("vqa-worker.js");
  const state = { ready: false, photo: null, asks: 0, answers: null, threads: 1, last: null, models: [] };

  async function timeRuns(runs) {
    const ask = state.asks;
    $("time").disabled = true;
    status(`timing ${runs} runs ...`);
    const { medianMs } = await worker("time", { runs });
    if (ask !== state.asks) return;  // asked again meanwhile: the timing is of an older answer
    status(`ViLT ${medianMs.toFixed(1)} ms (median of ${runs} runs, ${backendName(chosenBackend())}, ` +
      `${plural(state.threads, "thread")})`);
    state.last = { ...state.last, latency_ms: medianMs, timed_runs: runs };
    publish(state.last, false);
    $("time").disabled = false;
  }

  async function answer() {
    const question = $("question").value;
    if (!state.photo) return status("pick a photo, then ask");
    if (!state.ready) return status("photo queued: the model is still loading ...");
    const asked = performance.now();
    const ask = ++state.asks;
    status("answering ...");
    try {
      const model = $("variant").value;
      const result = await worker("ask", { file: state.photo, question, model });
      if (ask !== state.asks) return;  // asked again meanwhile: that answer follows
      const softmax = state.models.find(({ url }) => url === model)?.softmax ?? false;
      const top = topAnswers(result.logits, state.answers, 5, softmax);
      showAnswers(top);
      showStages(result);
      const shownMs = performance.now() - asked;
      status(`answered ${shownMs.toFixed(0)} ms after the question (${backendName(chosenBackend())}, ` +
        `${plural(state.threads, "thread")})`);
      state.last = { ...result, question, model, top5: top.map(({ index }) => index),
        names: top.map(({ answer }) => answer), scores: top.map(({ score }) => score), first_result_ms: shownMs, threads: state.threads, latency_ms: null,
        backend: chosenBackend() };
      publish(state.last, autoRuns > 0);
      $("time").disabled = false;
      if (autoRuns > 0) await timeRuns(autoRuns);
    } catch (error) {
      if (ask === state.asks) status("error: " + error.message);
    }
  }

  function pick(files) {
    if (!files || !files[0]) return;
    state.photo = files[0];
    if ($("preview").src) URL.revokeObjectURL($("preview").src);
    $("preview").src = URL.createObjectURL(state.photo);
    answer();
  }

  async function load() {
    const models = await findModels(urls);
    if (models.length === 0) throw new Error(`no model file here (${urls.map((u) => u.split("/").pop()).join(", ")}): ${EXPORT_HINT}`);
    state.models = models;
    for (const { url, label } of models) $("variant").add(new Option(label, url));
    const chosen = () => {
      const { name, sentence } = models[$("variant").selectedIndex];
      $("model-name").textContent = name;
      $("variant-note").textContent = sentence;
    };
    chosen();
    $("variant").addEventListener("change", () => {
      chosen();
      answer();
    });
    const stem = stemOf(models[0].url);
    const [info, answers] = await Promise.all([
      worker("load", { models: models.map(({ url }) => url), tokenizerUrl: stem + ".tokenizer.json",
        configUrl: stem + ".tokenizer_config.json", imageConfigUrl: stem + ".preprocessor_config.json",
        backend: chosenBackend() }),
      loadLabels(stem + ".answers.txt"),
    ]);
    Object.assign(state, { answers, threads: info.threads, ready: true });
    if (!answers) $("note").textContent = `No ${stem.split("/").pop()}.answers.txt beside the model: answer indices are shown.`;
    status(`ready (${backendName(chosenBackend())}, ${plural(info.threads, "thread")}): pick a photo and ask`);
    if (state.photo) answer();
  }

  addControls();
  $("photo").addEventListener("change", (event) => {
    pick(event.target.files);
    event.target.value = "";  // so that picking the same photo again answers again
  });
  $("drop").addEventListener("dragover", (event) => event.preventDefault());
  $("drop").addEventListener("drop", (event) => { event.preventDefault(); pick(event.dataTransfer.files); });
  $("ask-form").addEventListener("submit", (event) => { event.preventDefault(); answer(); });
  $("time").addEventListener("click", () => timeRuns(10).catch((error) => status("error: " + error.message)));
  load().catch((error) => status("error: " + error.message));
}

startVqaPage();
