#!/bin/sh
# What the browser test (tests/test_examples_web.py) needs besides Python packages: Chromium
# and its WebDriver (Debian packages) and ONNX Runtime Web (npm, into examples/web). Either
# may be unavailable (no root, no registry): then it says so and the browser test is skipped
# with the reason, the rest of the suite runs.
cd "$(dirname "$0")/.." || exit 0
if ! command -v chromedriver >/dev/null 2>&1; then
  install="apt-get install -y -qq --no-install-recommends chromium chromium-driver"
  $install >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && $install >/dev/null 2>&1; } \
    || echo "note: could not install chromium and chromium-driver (apt-get); the browser test will be skipped"
fi
if [ ! -f examples/web/node_modules/onnxruntime-web/dist/ort.min.js ]; then
  npm ci --prefix examples/web --no-audit --no-fund --loglevel=error >/dev/null 2>&1 \
    || echo "note: could not install onnxruntime-web (npm ci in examples/web); the browser test will be skipped"
fi
exit 0
