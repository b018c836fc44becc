// ViLT's pre-processing in the page, equal to mobilevt's (mobilevt.data.vilt_preprocess and
// mobilevt.data.tokenizer) id for id and pixel for pixel: the ONNX file holds the model alone,
// because ViLT's resize has a size that depends on the photo's and an antialiased bicubic
// filter that the ONNX exporters do not write.
//
// Image: ViLT's size rule, read from the NAME.preprocessor_config.json that `mobilevt export`
// writes (ViLT-B/32's: the shorter side to 384, the longer one capped at 639, both floored to
// multiples of 32; a model trained on other images has its own); torch's uint8 antialiased
// bicubic resize (the kernel transformers' ViltImageProcessor runs: weights in double,
// rounded to int16 at the largest precision that holds them, width then height, each pass
// rounded and clamped to bytes); then (x - 255 mean) / (255 std) in float32.
// Question: Hugging Face's tokenizers (@huggingface/tokenizers) on the tokenizer.json that
// `mobilevt export` writes; they do not truncate, so the ids are cut to max_length here.
"use strict";

// ViLT-B/32's rule (mobilevt.data.vilt_preprocess.VILT_IMAGE_SIZE_RULE)
const VILT_IMAGE_RULE = {
  shorterSide: 384, longerSideMax: 639, sizeDivisor: 32, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5],
};

// the rule of a preprocessor_config.json (transformers' ViltImageProcessor keys), or an
// error that says what is wrong with the file
function imageRule(config, url) {
  const shorterSide = config?.size?.shortest_edge;
  const sizeDivisor = config?.size_divisor;
  const positive = (v) => Number.isInteger(v) && v > 0;
  const triple = (v) => Array.isArray(v) && v.length === 3 && v.every(Number.isFinite);
  if (!positive(shorterSide) || !positive(sizeDivisor) || !triple(config.image_mean) || !triple(config.image_std)) {
    throw new Error(`${url} has no ViLT size rule (size.shortest_edge, size_divisor, image_mean, image_std): ` +
      "export the model again with `mobilevt export ... --format onnx`");
  }
  if (config.resample !== 3) throw new Error(`${url}: resample ${config.resample}; the page resizes bicubic (3) only`);
  const longerSideMax = config.longer_side_max ?? Math.trunc((1333 / 800) * shorterSide);
  return { shorterSide, longerSideMax, sizeDivisor, mean: config.image_mean, std: config.image_std };
}

// (height, width) ViLT resizes a photo to (mobilevt.data.vilt_preprocess.vilt_resized_size)
function viltResizedSize(height, width, rule = VILT_IMAGE_RULE) {
  const { shorterSide, longerSideMax, sizeDivisor } = rule;
  let newHeight, newWidth;
  if (height < width) {
    newHeight = shorterSide;
    newWidth = width * (shorterSide / height);
  } else {
    newHeight = height * (shorterSide / width);
    newWidth = shorterSide;
  }
  const longest = Math.max(newHeight, newWidth);
  if (longest > longerSideMax) {
    const scale = longerSideMax / longest;
    newHeight *= scale;
    newWidth *= scale;
  }
  const floor = (side) => Math.floor(Math.trunc(side + 0.5) / sizeDivisor) * sizeDivisor;
  return [floor(newHeight), floor(newWidth)];
}

// the Keys cubic with a = -0.5 (PIL's and torch's antialiased bicubic filter)
function cubic(x) {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
  return 0;
}

// one axis of the resize: per output sample its first input sample, how many it reads and
// their integer weights (taps per row), all at one precision (bits)
function axisWeights(inSize, outSize) {
  const scale = inSize / outSize;
  const support = scale >= 1 ? 2 * scale : 2;
  const taps = Math.ceil(support) * 2 + 1;
  const invScale = scale >= 1 ? 1 / scale : 1;
  const first = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const real = new Float64Array(outSize * taps);
  let largest = 0;
  for (let i = 0; i < outSize; i++) {
    const center = scale * (i + 0.5);
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xsize = Math.min(Math.max(Math.min(Math.trunc(center + support + 0.5), inSize) - xmin, 0), taps);
    let total = 0;
    for (let j = 0; j < xsize; j++) {
      const w = cubic((j + xmin - center + 0.5) * invScale);
      real[i * taps + j] = w;
      total += w;
    }
    if (total !== 0) {
      for (let j = 0; j < xsize; j++) {
        real[i * taps + j] /= total;
        largest = Math.max(largest, real[i * taps + j]);
      }
    }
    first[i] = xmin;
    count[i] = xsize;
  }
  let precision = 0;
  for (; precision < 22; precision++) {
    if (Math.trunc(0.5 + largest * 2 ** (precision + 1)) >= 1 << 15) break;
  }
  const weights = new Int32Array(outSize * taps);
  for (let k = 0; k < real.length; k++) {
    const v = real[k] * 2 ** precision;
    weights[k] = v < 0 ? Math.trunc(-0.5 + v) : Math.trunc(0.5 + v);
  }
  return { first, count, weights, taps, precision };
}

// resamples bytes along one axis: `lines` lines of `inSize` samples (`step` apart inside a
// line, `lineStep` apart between lines), 3 channels interleaved, into the same layout
function resampleAxis(source, lines, inSize, outSize, layout) {
  const { first, count, weights, taps, precision } = axisWeights(inSize, outSize);
  const { inStep, inLineStep, outStep, outLineStep, outLength } = layout(inSize, outSize);
  const target = new Uint8Array(outLength);
  const half = 1 << (precision - 1);
  for (let line = 0; line < lines; line++) {
    for (let i = 0; i < outSize; i++) {
      for (let c = 0; c < 3; c++) {
        let sum = half;
        let at = line * inLineStep + first[i] * inStep + c;
        for (let j = 0; j < count[i]; j++, at += inStep) sum += source[at] * weights[i * taps + j];
        target[line * outLineStep + i * outStep + c] = Math.min(Math.max(sum >> precision, 0), 255);
      }
    }
  }
  return target;
}

// uint8 RGB [height, width, 3] -> uint8 RGB [outHeight, outWidth, 3], width first
function resizeRgb(rgb, height, width, outHeight, outWidth) {
  let pixels = rgb;
  if (outWidth !== width) {
    pixels = resampleAxis(pixels, height, width, outWidth, (inSize, outSize) => ({
      inStep: 3, inLineStep: inSize * 3, outStep: 3, outLineStep: outSize * 3, outLength: height * outSize * 3,
    }));
  }
  if (outHeight !== height) {
    pixels = resampleAxis(pixels, outWidth, height, outHeight, (_inSize, outSize) => ({
      inStep: outWidth * 3, inLineStep: 3, outStep: outWidth * 3, outLineStep: 3, outLength: outSize * outWidth * 3,
    }));
  }
  return pixels;
}

// ViLT's pixel_values [1, 3, h, w] (float32, channels first) and size for a uint8 RGB photo
function viltPixelValues(rgb, height, width, rule = VILT_IMAGE_RULE) {
  const [outHeight, outWidth] = viltResizedSize(height, width, rule);
  if (outHeight === 0 || outWidth === 0) {
    throw new Error(`the photo (${width}x${height}) is too elongated for ViLT: crop it closer to square`);
  }
  const resized = resizeRgb(rgb, height, width, outHeight, outWidth);
  // float32 as torch computes it: 255 mean and 255 std rounded, then one rounding per step
  const mean = rule.mean.map((m) => Math.fround(Math.fround(m) * 255));
  const std = rule.std.map((s) => Math.fround(Math.fround(s) * 255));
  const plane = outHeight * outWidth;
  const values = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) values[c * plane + p] = Math.fround(resized[p * 3 + c] - mean[c]) / std[c];
  }
  return { values, height: outHeight, width: outWidth };
}

// [CLS] question [SEP], at most maxLength ids (mobilevt's WordPieceTokenizer.encode)
function encodeQuestion(tokenizer, question, maxLength) {
  const ids = tokenizer.encode(question, { add_special_tokens: false }).ids.slice(0, maxLength - 2);
  return [tokenizer.token_to_id("[CLS]"), ...ids, tokenizer.token_to_id("[SEP]")];
}
