"""Serves this folder on http://127.0.0.1:8000 for the example page: ONNX Runtime Web from
node_modules (run `npm ci` here first), the model and labels you copy next to index.html
(model.onnx, labels.txt). Usage: python serve.py [PORT]."""

from __future__ import annotations

import functools
import http.server
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORT_DIST = HERE / "node_modules" / "onnxruntime-web" / "dist"


class Handler(http.server.SimpleHTTPRequestHandler):
    # module scripts and WebAssembly need their own types (older Pythons guess neither)
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".wasm": "application/wasm",
    }

    def translate_path(self, path: str) -> str:
        # /ort/... is ONNX Runtime Web's dist folder: nothing to copy or link
        if path.startswith("/ort/"):
            return str(ORT_DIST / path[len("/ort/") :].split("?")[0])
        return super().translate_path(path)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's signature; quiet: the page shows what happens
        pass


def make_server(folder: Path, port: int = 8000) -> http.server.ThreadingHTTPServer:
    """A server of ``folder`` (the page's files, model and labels) on 127.0.0.1:``port``."""
    if not (ORT_DIST / "ort.min.js").is_file():
        raise FileNotFoundError(f"{ORT_DIST} is missing: run `npm ci` in {HERE}")
    return http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Handler, directory=str(folder)))


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    print(f"http://127.0.0.1:{port}/index.html")
    make_server(HERE, port).serve_forever()
