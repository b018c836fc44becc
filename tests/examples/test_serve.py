"""The example page's server serves its own files only: a path that resolves outside the
page's folder or a library's (ONNX Runtime Web's, the tokenizers') is a 404, whatever its spelling (``..``,
``%2e%2e``, an absolute path after ``/ort/``, a symlink), and a request whose ``Host`` is
not the loopback name is refused (DNS rebinding). Raw requests, as an attacker sends them."""

from __future__ import annotations

import http.client
import importlib.util
import threading

import pytest
from conftest import ROOT

WEB = ROOT / "examples" / "web"


@pytest.fixture()
def server(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("mobilevt_web_serve_paths", WEB / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    dist = tmp_path / "ort-dist"
    dist.mkdir()
    (dist / "ort.min.js").write_text("// ort")
    tokenizers = tmp_path / "tokenizers-dist"
    tokenizers.mkdir()
    (tokenizers / "tokenizers.min.mjs").write_text("// tokenizers")
    monkeypatch.setattr(serve, "ORT_DIST", dist)
    monkeypatch.setattr(serve, "LIBRARIES", {"/ort/": dist, "/tokenizers/": tokenizers})
    page = tmp_path / "page"
    page.mkdir()
    (page / "index.html").write_text("<p>page</p>")
    (tmp_path / "secret.txt").write_text("secret")
    (page / "link.txt").symlink_to(tmp_path / "secret.txt")
    (dist / "link.js").symlink_to(tmp_path / "secret.txt")
    httpd = serve.make_server(page, port=0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def _get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
    connection.putheader("Host", f"{host}:{port}")
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body


def test_its_own_files_are_served(server):
    assert _get(server, "/index.html") == (200, b"<p>page</p>")
    assert _get(server, "/ort/ort.min.js") == (200, b"// ort")
    assert _get(server, "/tokenizers/tokenizers.min.mjs") == (200, b"// tokenizers")
    assert _get(server, "/index.html", host="localhost")[0] == 200


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/ort/../../secret.txt",
        "/ort/%2e%2e/%2e%2e/secret.txt",
        "/ort/..%2f..%2fsecret.txt",
        "/ort//etc/passwd",
        "/ort/" + "../" * 12 + "etc/passwd",
        "/%2e%2e/secret.txt",
        "/link.txt",
        "/ort/link.js",
        "/ort/%00/secret.txt",
        "/tokenizers/../../secret.txt",
        "/tokenizers/%2e%2e/%2e%2e/secret.txt",
    ],
)
def test_a_path_outside_its_folders_is_not_found(server, path):
    status, body = _get(server, path)
    assert status == 404 and b"secret" not in body and b"root:" not in body


def test_another_host_name_is_refused(server):
    status, body = _get(server, "/index.html", host="attacker.example")
    assert status == 403 and b"page" not in body
