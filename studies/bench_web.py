"""What a web page of examples/web downloads and how fast its model runs in the browser, next
to Python's onnxruntime on the same file, thread count and inputs: interleaved rounds.

    python studies/bench_web.py vqa FOLDER PHOTO [--question Q] [--rounds 3] [--runs 20]
    python studies/bench_web.py classifier FOLDER PHOTO

FOLDER holds what `mobilevt export` wrote for the page (vqa.onnx and its side files, or
model.onnx with --include-preprocessing); the page's files are copied into it and it is
served by examples/web/serve.py. Each round: the page in headless Chromium (a fresh tab: the
model loaded, the photo picked, the question asked, `?runs=N` model runs timed by the page),
then onnxruntime in Python (the same number of threads as the page, spinning off) on the
inputs mobilevt makes from the same pixels. Prints one JSON line per round (with the longest
main-thread task, over 50 ms, while the photo was answered) and the medians.
Needs Chromium, chromedriver, selenium and `npm ci --prefix examples/web`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image
from selenium import webdriver
from selenium.webdriver.support.ui import WebDriverWait

WEB = Path(__file__).resolve().parents[1] / "examples" / "web"
PAGES = {"vqa": ("vqa.html", "vqa.onnx"), "classifier": ("index.html", "model.onnx")}


def _server(folder: Path):
    """serve.py's server of ``folder``, recording the size of each file it sends."""
    spec = importlib.util.spec_from_file_location("mobilevt_web_serve", WEB / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    sent: dict[str, int] = {}

    class Recording(serve.Handler):
        def send_head(self):
            result = super().send_head()
            if result is not None and self.command == "GET":
                sent[self.path.split("?", 1)[0]] = Path(self.translate_path(self.path)).stat().st_size
            return result

    for name in sorted(p.name for p in WEB.iterdir() if p.suffix in (".html", ".js", ".css")):
        shutil.copy(WEB / name, folder / name)
    server = serve.http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: Recording(*a, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, sent


def _browser():
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))


def _page_round(driver, url: str, photo: Path, question: str | None) -> dict:
    wait = WebDriverWait(driver, 1200)
    started = time.perf_counter()
    driver.get(url)
    wait.until(lambda d: d.execute_script("return document.getElementById('status').textContent.startsWith('ready')"))
    loaded_s = time.perf_counter() - started
    # main-thread tasks over 50 ms from here on (the page must not freeze while the model runs)
    driver.execute_script(
        "window.longTasks = []; new PerformanceObserver((list) => "
        "window.longTasks.push(...list.getEntries().map((e) => e.duration))).observe({ type: 'longtask' });"
    )
    if question is not None:
        field = driver.find_element("id", "question")
        field.clear()
        field.send_keys(question)
    driver.find_element("id", "photo").send_keys(str(photo))
    wait.until(lambda d: d.execute_script("return document.getElementById('result').dataset.done === 'true'"))
    result = json.loads(driver.find_element("id", "result").get_attribute("textContent"))
    result.pop("logits", None), result.pop("output", None)
    long_tasks = driver.execute_script("return window.longTasks")
    return {"page_load_s": round(loaded_s, 2), "longest_main_thread_task_ms": max(long_tasks, default=0), **result}


def _python_inputs(kind: str, folder: Path, model: Path, photo: Path, question: str) -> list[np.ndarray]:
    """The model's inputs, in its order, made by mobilevt from the photo's pixels."""
    pixels = np.asarray(Image.open(photo).convert("RGB"))
    if kind == "classifier":
        return [pixels]
    import torch

    from mobilevt.data.tokenizer import create_tokenizer
    from mobilevt.data.vilt_preprocess import ViltImagePreprocess, ViltImageSizeRule

    stem = model.with_suffix("").name  # the side files the export wrote beside the model
    config = json.loads((folder / f"{stem}.tokenizer_config.json").read_text())
    tokenizer = create_tokenizer(folder / f"{stem}.vocab.txt", max_length=config["model_max_length"])
    input_ids, attention_mask = tokenizer.encode_batch([question], False)
    rule = json.loads((folder / f"{stem}.preprocessor_config.json").read_text())
    preprocess = ViltImagePreprocess(ViltImageSizeRule.from_preprocessor_config(rule))
    pixel_values, pixel_mask = preprocess(torch.from_numpy(pixels.copy()))
    return [tensor.numpy() for tensor in (input_ids, attention_mask, pixel_values, pixel_mask)]


def _python_round(model: Path, inputs: list[np.ndarray], threads: int, runs: int) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    feeds = {node.name: array for node, array in zip(session.get_inputs(), inputs, strict=True)}
    session.run(None, feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=sorted(PAGES))
    parser.add_argument("folder", type=Path)
    parser.add_argument("photo", type=Path)
    parser.add_argument("--question", default="What is in the picture?")
    parser.add_argument("--model", help="the model file in FOLDER (default: the page's)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    page, default_model = PAGES[args.kind]
    model = args.folder / (args.model or default_model)
    with tempfile.TemporaryDirectory() as scratch:
        photo = Path(scratch) / "photo.png"  # lossless: the page and PIL decode the same pixels
        Image.open(args.photo).convert("RGB").save(photo)
        server, sent = _server(args.folder)
        port = server.server_address[1]
        query = f"?runs={args.runs}" + (f"&models={model.name}" if args.kind == "vqa" else f"&model={model.name}")
        inputs = _python_inputs(args.kind, args.folder, model, photo, args.question)
        rows = []
        for round_index in range(args.rounds):
            driver = _browser()
            try:
                shown = _page_round(
                    driver,
                    f"http://127.0.0.1:{port}/{page}{query}",
                    photo,
                    args.question if args.kind == "vqa" else None,
                )
            finally:
                driver.quit()
            python_ms = _python_round(model, inputs, shown["threads"], args.runs)
            rows.append({"round": round_index, **shown, "python_onnxruntime_ms": round(python_ms, 1)})
            print(json.dumps(rows[-1]), flush=True)
        server.shutdown()
    browser_ms = [row["latency_ms"] for row in rows]
    python_ms = [row["python_onnxruntime_ms"] for row in rows]
    ratios = [b / p for b, p in zip(browser_ms, python_ms, strict=True)]
    summary = {
        "browser_model_ms": [round(x, 1) for x in browser_ms],
        "python_onnxruntime_ms": python_ms,
        "browser_over_python": [round(x, 2) for x in ratios],
        "downloaded_bytes": dict(sorted(sent.items())),
        "downloaded_total_mb": round(sum(sent.values()) / 1e6, 1),
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    sys.exit(main())
