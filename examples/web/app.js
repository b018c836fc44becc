// The classifier page (index.html): the top-5 classes of the picked photo. Defaults:
// model.onnx and labels.txt next to the page (see page.js for the parameters).
"use strict";

// a trained classifier puts a few percent or more on its top class; random weights spread
// about 1/classes over all of them
const FLAT_TOP1 = 0.02;

function topK(logits, k) {
  const indices = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]);
  const max = Math.max(...logits);
  const total = logits.reduce((sum, value) => sum + Math.exp(value - max), 0);
  return indices.slice(0, k).map((index) => ({ index, probability: Math.exp(logits[index] - max) / total }));
}

function showTop5(result, labels) {
  const logits = result.output;
  const top5 = topK(logits, 5);
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
  return { logits, top5: top5.map(({ index }) => index), names: top5.map(({ index }) => labels?.[index] ?? null) };
}

startPage({ defaultModel: "model.onnx", defaultLabels: "labels.txt", show: showTop5 });
