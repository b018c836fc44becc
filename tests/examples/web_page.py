"""What the browser tests of examples/web share: headless Chromium driven by selenium, the
pages served by examples/web/serve.py from a test's folder, real photos as PNG."""

from __future__ import annotations

import importlib.util
import shutil
import threading
from pathlib import Path

import pytest
from conftest import real_photos
from PIL import Image

WEB = Path(__file__).resolve().parents[2] / "examples" / "web"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"  # screenshots, kept for a look
PAGE_FILES = (
    "index.html", "app.js", "segment.html", "segment.js", "vqa.html", "vqa.js", "vilt.js", "page.js", "page.css",
    "worker-base.js", "worker.js", "vqa-worker.js",
)  # fmt: skip


def _serve_module():
    spec = importlib.util.spec_from_file_location("mobilevt_web_serve", WEB / "serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def chromium(webgpu: bool = False):
    """Headless Chromium (a generator: a test module's ``browser`` fixture yields from it), or
    a skip that says what to install. ``webgpu``: with WebGPU on (Chromium's software
    adapter, SwiftShader, where the machine has no GPU)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("Chromium is not installed: apt-get install chromium chromium-driver")
    if not (WEB / "node_modules" / "@huggingface" / "tokenizers" / "dist").is_dir():
        pytest.skip("the pages' libraries are not installed: npm ci --prefix examples/web")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    for argument in ("--enable-unsafe-webgpu",) if webgpu else ("--disable-gpu",):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    yield driver
    driver.quit()


def serve(folder: Path):
    """The pages' files copied into ``folder`` (beside what a test exported there) and served
    from it on a free port of 127.0.0.1; ``shutdown()`` the server at the end."""
    for page_file in PAGE_FILES:
        shutil.copy(WEB / page_file, folder / page_file)
    server = _serve_module().make_server(folder, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def page_url(server, page: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/{page}"


def wait_for(driver, script: str, seconds: float = 120):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds).until(lambda d: d.execute_script(script))


def pngs(folder: Path, count: int) -> list[Path]:
    """Real photos as PNG: lossless, so the browser and PIL see the same pixels."""
    paths = []
    for i, photo in enumerate(real_photos(count)):
        paths.append(folder / f"photo{i}.png")
        Image.open(photo).convert("RGB").save(paths[-1])
    return paths


def phone_size(driver, scale: int = 3) -> None:
    """A 390x844 phone screen at ``scale`` device pixels per CSS pixel."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": scale, "mobile": True}
    )


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path
