// The segmentation page (segment.html): the picked photo with each pixel of its centre square
// coloured by the class the model gives it, and a legend. The exported file resizes the
// shorter side and crops the centre square itself, so its mask covers that square. Defaults:
// segment.onnx and segment-labels.txt next to the page (see page.js for the parameters).
"use strict";

const MASK_ALPHA = 140;  // of 255: the photo stays visible under the colours

// PASCAL VOC's palette: the bits of the class index spread over the channels' high bits
function vocColour(index) {
  let [r, g, b, c] = [0, 0, 0, index];
  for (let bit = 7; bit >= 0; bit--) {
    r |= (c & 1) << bit;
    g |= ((c >> 1) & 1) << bit;
    b |= ((c >> 2) & 1) << bit;
    c >>= 3;
  }
  return [r, g, b];
}

// the class of each output pixel: argmax over the classes of [1, C, h, w] logits
function argmaxMask(logits, [, classes, height, width]) {
  const pixels = height * width;
  const mask = new Uint8Array(pixels);
  for (let p = 0; p < pixels; p++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (logits[c * pixels + p] > logits[best * pixels + p]) best = c;
    mask[p] = best;
  }
  return mask;
}

function draw(result, mask) {
  const [, , maskHeight, maskWidth] = result.dims;
  const canvas = $("overlay");
  canvas.width = result.width;
  canvas.height = result.height;
  const context = canvas.getContext("2d");
  context.drawImage($("preview"), 0, 0);
  const colours = new ImageData(maskWidth, maskHeight);
  mask.forEach((index, p) => {
    if (index === 0) return;  // background stays the photo
    colours.data.set([...vocColour(index), MASK_ALPHA], 4 * p);
  });
  const layer = new OffscreenCanvas(maskWidth, maskHeight);
  layer.getContext("2d").putImageData(colours, 0, 0);
  const side = Math.min(result.width, result.height);  // the centre square the model saw
  context.imageSmoothingEnabled = false;
  context.drawImage(layer, Math.floor((result.width - side) / 2), Math.floor((result.height - side) / 2), side, side);
}

function showLegend(counts, labels) {
  const total = counts.reduce((sum, count) => sum + count, 0);
  const present = [...counts.keys()].filter((index) => counts[index] > 0).sort((a, b) => counts[b] - counts[a]);
  const table = $("legend");
  table.innerHTML = "<tr><th>class</th><th>share of the square</th></tr>";
  for (const index of present) {
    const row = table.insertRow();
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = index === 0 ? "transparent" : `rgb(${vocColour(index).join(",")})`;
    row.insertCell().append(swatch, labels && labels[index] ? labels[index] : String(index));
    row.insertCell().textContent = (100 * counts[index] / total).toFixed(1) + " %";
  }
  return present.map((index) => ({ index, name: labels?.[index] ?? null, share: counts[index] / total }));
}

async function showMask(result, labels) {
  const mask = argmaxMask(result.output, result.dims);
  await $("preview").decode();
  draw(result, mask);
  const counts = new Array(result.dims[1]).fill(0);
  mask.forEach((index) => counts[index]++);
  $("note").textContent = labels ? "" : "No segment-labels.txt next to the page: class indices are shown (see the README).";
  return { logits: result.output, dims: result.dims, classes: showLegend(counts, labels) };
}

startPage({ defaultModel: "segment.onnx", defaultLabels: "segment-labels.txt", show: showMask });
