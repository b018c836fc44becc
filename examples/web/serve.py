"""Serves this folder on http://127.0.0.1:8000 for the example pages (index.html,
segment.html, vqa.html): ONNX Runtime Web and the tokenizers from node_modules (run `npm ci`
here first), and the models and their side files you export next to the pages. Usage:
python serve.py [PORT]. It sends the cross-origin isolation headers (COOP/COEP) under which
WebAssembly runs on several threads.

It serves its own files only: a path that resolves outside this folder or the libraries'
(``..``, ``%2e%2e``, an absolute path, a symlink) is a 404, and a request for another host
name than 127.0.0.1 or localhost is refused (a web page could reach the server through DNS
rebinding otherwise)."""

from __future__ import annotations

import functools
import http.server
import posixpath
import sys
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORT_DIST = HERE / "node_modules" / "onnxruntime-web" / "dist"
# the libraries the pages load, served from node_modules: nothing to copy or link
LIBRARIES = {"/ort/": ORT_DIST, "/tokenizers/": HERE / "node_modules" / "@huggingface" / "tokenizers" / "dist"}
ALLOWED_HOSTS = ("127.0.0.1", "localhost")


class Handler(http.server.SimpleHTTPRequestHandler):
    # module scripts and WebAssembly need their own types (older Pythons guess neither)
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".wasm": "application/wasm",
    }

    def end_headers(self) -> None:
        # cross-origin isolation: SharedArrayBuffer for WebAssembly threads (ONNX Runtime Web
        # runs on one thread without it); every file here is same-origin, so nothing breaks
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        super().end_headers()

    def send_head(self):
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
        if host not in ALLOWED_HOSTS:
            self.send_error(403, "this server answers requests for 127.0.0.1 and localhost only")
            return None
        if self._resolve(self.path) is None:
            self.send_error(404, "File not found")
            return None
        return super().send_head()

    def translate_path(self, path: str) -> str:
        resolved = self._resolve(path)
        # never reached with None (send_head answers 404 first): a name that cannot exist
        return resolved if resolved is not None else str(Path(self.directory) / "\0")

    def _resolve(self, path: str) -> str | None:
        """The file ``path`` names, symlinks resolved, if it lies inside the page's folder or
        a library's (/ort/..., /tokenizers/...); else None."""
        clean = urllib.parse.unquote(path.split("?", 1)[0].split("#", 1)[0], errors="surrogatepass")
        root, inside = Path(self.directory), clean
        for prefix, library in LIBRARIES.items():
            if clean.startswith(prefix):
                root, inside = library, clean[len(prefix) :]
        parts = [p for p in posixpath.normpath("/" + inside).split("/") if p not in ("", ".", "..")]
        try:
            target = root.joinpath(*parts).resolve()
        except (OSError, ValueError):  # a NUL byte, a symlink loop
            return None
        if not target.is_relative_to(root.resolve()):
            return None
        return str(target) + ("/" if clean.endswith("/") and target.is_dir() else "")

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's signature; quiet: the page shows what happens
        pass


def make_server(folder: Path, port: int = 8000) -> http.server.ThreadingHTTPServer:
    """A server of ``folder`` (the page's files, model and labels) on 127.0.0.1:``port``."""
    if not (ORT_DIST / "ort.min.js").is_file():
        raise FileNotFoundError(f"{ORT_DIST} is missing: run `npm ci` in {HERE}")
    return http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Handler, directory=str(folder)))


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    for page in ("index.html", "segment.html", "vqa.html"):
        print(f"http://127.0.0.1:{port}/{page}")
    make_server(HERE, port).serve_forever()
