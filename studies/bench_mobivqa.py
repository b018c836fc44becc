"""MobiVQA optimisations on a ViLT trained on easy-VQA: accuracy vs batch-1 latency.

Trains (or loads from ``--run-dir``) a small ViLT on easy-VQA (``pip install easy-vqa``),
then its exit heads and exit predictor with the backbone frozen, on the training questions
of 90% of the training images; the predictor learns the earliest exit whose answer equals
the full model's, and its risk is calibrated on the questions of the other 10% (never on the
test split). Then it measures for each setting (full model, confidence exit at several
thresholds, the calibrated exit predictor, fixed exits, question-guided image-token pruning
at several keep ratios, dynamic int8 linears, combinations):

- accuracy and mean number of layers run on the easy-VQA test questions (batched:
  per-question results equal batch-1 results for every mode);
- batch-1 latency: the median over ``--latency-questions`` test questions, every setting
  run on each question in turn (interleaved, the first one rotating), reported also as a
  ratio to the full model measured in the same run;
- the oracle exits (every question stopping at its earliest exit that gives the full
  model's answer, or its earliest correct one): what a perfect predictor would reach.

Writes ``mobivqa.md`` (table), ``mobivqa.json`` and ``mobivqa.png`` (accuracy vs latency,
points numbered and named in a legend) to ``--out``. The trained weights (safetensors), the
vocabulary and the config live in ``--run-dir`` (git-ignored ``runs/``); delete it (or pass
``--retrain``) to train again, pass ``--continue-epochs`` to train the saved model further
(resumable steps), or ``--retrain-exits`` to train its exit heads and predictor again.

    python studies/bench_mobivqa.py --run-dir runs/mobivqa --out bench-results/mobivqa
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import mobilevt
from mobilevt import save_weights
from mobilevt.data.vilt_preprocess import ViltImageSizeRule
from mobilevt.fileio import atomic_path, write_text_atomic
from mobilevt.models.mobivqa import MobiVqaVilt
from mobilevt.training.vqa import (
    calibrate_exit_predictor,
    easy_vqa_answer_groups,
    evaluate_on_split,
    exit_oracle,
    hold_out,
    load_easy_vqa,
    train_exit_heads,
    train_vqa,
)


def build_model(config: dict, answers: list[str]) -> MobiVqaVilt:
    model = _new_model(config["arch"], answers)
    model.add_early_exits(config["exit_layers"], predictor_layer=config["predictor_layer"])
    return model


def _new_model(arch: dict, answers: list[str]) -> MobiVqaVilt:
    """A ViLT for easy-VQA: its photos are squares of ``image_size`` and its answers are scored
    with a softmax (both saved with the weights, for the pipeline, the exports and the page)."""
    model = mobilevt.create_model("vilt_b32_vqa", num_classes=len(answers), answers=answers, **arch)
    model.image_size_rule = ViltImageSizeRule.for_image_size(arch["image_size"], arch["patch_size"])
    model.answer_softmax = True  # train_vqa's cross-entropy over the answers
    return model


def train_or_load(args, train, answers) -> tuple[MobiVqaVilt, dict]:
    from safetensors.torch import load_file

    run_dir = Path(args.run_dir)
    weights_path, config_path = run_dir / "model.safetensors", run_dir / "config.json"
    if weights_path.exists() and config_path.exists() and not args.retrain:
        config = json.loads(config_path.read_text())
        model = build_model(config, answers)
        model.load_state_dict(load_file(str(weights_path)))
        model.predictor_risk = config.get("calibration", {}).get("risk", 0.5)
        print(f"loaded {weights_path}")
        if "partial" in config and args.continue_epochs <= 0 and not args.retrain_exits:
            raise SystemExit(
                f"{weights_path} is a run cut short ({config['partial']}): its exits are untrained; continue it "
                "with --continue-epochs N (or train its exits with --retrain-exits)"
            )
        if args.continue_epochs <= 0:
            if args.retrain_exits:
                _train_exits(model, train, args, config)
                _save(model, config, weights_path, config_path)
            return model.eval(), config
        # train the loaded model further (a new warmup + cosine cycle), then its exits again
        start = time.perf_counter()
        train_vqa(
            model,
            train,
            epochs=args.continue_epochs,
            batch_size=64,
            lr=args.lr,
            seed=len(config.get("continued", [])) + 1,
            augment=args.augment,
            on_epoch_end=_saver(model, config, weights_path, config_path, args.continue_epochs),
        )
        config.pop("partial", None)
        config.setdefault("continued", []).append(
            {"epochs": args.continue_epochs, "seconds": round(time.perf_counter() - start, 1)}
        )
        _train_exits(model, train, args, config)
        _save(model, config, weights_path, config_path)
        return model.eval(), config
    layers = args.layers
    config = {
        "arch": dict(
            hidden_size=args.dim,
            num_layers=layers,
            num_heads=4,
            mlp_dim=2 * args.dim,
            patch_size=args.patch,
            image_size=args.image_size,
            vocab_size=args.vocab_size,
            max_text_len=16,
        ),
        "exit_layers": list(range(1, layers)),
        "predictor_layer": 1,
        "augment": args.augment,
    }
    torch.manual_seed(0)
    model = build_model(config, answers)  # exit heads (untrained) so that each epoch's save loads
    start = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_each_epoch = _saver(model, config, weights_path, config_path, args.epochs)
    train_vqa(
        model, train, epochs=args.epochs, batch_size=64, lr=args.lr, augment=args.augment, on_epoch_end=save_each_epoch
    )
    config.pop("partial", None)
    config["train_seconds"] = round(time.perf_counter() - start, 1)
    _train_exits(model, train, args, config)
    _save(model, config, weights_path, config_path)
    return model.eval(), config


def _saver(model: MobiVqaVilt, config: dict, weights_path: Path, config_path: Path, epochs: float):
    """Saves the model after each epoch, marked as partial in its config: a run cut short (the
    machine's session ended) is continued from there with ``--continue-epochs``."""

    def save(epochs_done: int) -> None:
        config["partial"] = {"epochs_done": epochs_done, "of": epochs}
        _save(model, config, weights_path, config_path)
        print(f"saved the model after epoch {epochs_done} of {epochs} ({weights_path})")

    return save


def _train_exits(model: MobiVqaVilt, train, args, config: dict) -> None:
    """The exit heads and the predictor on the questions of 90% of the training images, the
    predictor's risk calibrated on the other 10% (``--calibration-fraction``). The heads start
    again as copies of the trained model's own head."""
    model.add_early_exits(config["exit_layers"], predictor_layer=config["predictor_layer"])
    rest, held = hold_out(train, args.calibration_fraction)
    start = time.perf_counter()
    train_exit_heads(model, rest, epochs=args.exit_epochs, predictor_epochs=args.predictor_epochs)
    config["exit_train_seconds"] = round(time.perf_counter() - start, 1)
    config["exit_epochs"], config["predictor_epochs"] = args.exit_epochs, args.predictor_epochs
    config["calibration"] = calibrate_exit_predictor(model, held, min_agreement=args.min_agreement)
    config["calibration"] |= {"held_out_questions": len(held), "min_agreement": args.min_agreement}
    print(f"exit predictor calibrated on {len(held)} held-out questions: {config['calibration']}")


def _save(model: MobiVqaVilt, config: dict, weights_path: Path, config_path: Path) -> None:
    """The weights as ``mobilevt.save_weights`` writes them (architecture, answers, exits,
    calibrated risk and image rule in the metadata: ``mobilevt export vilt_b32_vqa --weights``
    and ``mobilevt vqa`` load the file), and the run's config."""
    save_weights(model, weights_path)
    write_text_atomic(config_path, json.dumps(config, indent=2))


def settings(model: MobiVqaVilt, prune_layer: int) -> list[tuple[str, dict, tuple[int, float]]]:
    """(name, set_early_exit kwargs, (pruning layer, keep ratio))."""
    rows = [("full model", {}, (0, 1.0))]
    for threshold in (0.6, 0.8, 0.9, 0.99):
        rows.append((f"confidence exit >= {threshold}", {"threshold": threshold}, (0, 1.0)))
    rows.append((f"exit predictor (risk {model.predictor_risk:.3g})", {"predictor": True}, (0, 1.0)))
    for layer in model.exit_layers:
        rows.append((f"fixed exit after layer {layer}", {"layer": layer}, (0, 1.0)))
    for ratio in (0.75, 0.5, 0.25):
        rows.append((f"prune after layer {prune_layer}, keep {ratio}", {}, (prune_layer, ratio)))
    rows.append(("prune 0.5 + confidence >= 0.9", {"threshold": 0.9}, (prune_layer, 0.5)))
    rows.append(("prune 0.5 + exit predictor", {"predictor": True}, (prune_layer, 0.5)))
    return rows


INT8_SETTINGS = ("full model", "exit predictor", "prune after layer", "prune 0.5 + exit predictor")


def configure(model: MobiVqaVilt, exit_kwargs: dict, pruning: tuple[int, float]) -> None:
    model.set_early_exit(**exit_kwargs)
    model.set_token_pruning(*pruning)


def dynamic_int8(model: MobiVqaVilt) -> MobiVqaVilt:
    """A copy with every linear layer in dynamic int8 (int8 weights per channel, activations
    quantized per call): the usual int8 of BERT-sized transformers."""
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)


def _exported_settings(prune_layer: int) -> list[tuple[str, dict, tuple[int, float]]]:
    return [
        ("full model", {}, (0, 1.0)),
        ("confidence exit >= 0.9", {"threshold": 0.9}, (0, 1.0)),
        ("exit predictor", {"predictor": True}, (0, 1.0)),
        ("prune 0.5 + exit predictor", {"predictor": True}, (prune_layer, 0.5)),
    ]


def _exported(model: MobiVqaVilt, test, prune_layer: int, count: int, folder: Path) -> list[dict]:
    """The settings an app switches, in the files it ships: one TorchScript file switched by
    its scripted methods, and an ONNX file per setting (the data-dependent exits as ONNX
    ``If``). Per setting and runtime: top-1 agreement with eager and the largest logit
    difference on ``count`` test questions, and the batch-1 latency (median, each question
    run by eager, TorchScript and ONNX Runtime in turn)."""
    from mobilevt.export.vilt import export_vilt_onnx

    def inputs(question: int) -> tuple[torch.Tensor, ...]:
        input_ids, attention_mask, pixel_values, _ = test.batch(torch.tensor([question]))
        return input_ids, attention_mask, pixel_values, torch.ones_like(pixel_values[:, 0], dtype=torch.long)

    scripted = torch.jit.script(copy.deepcopy(model).eval())
    rows = []
    for name, exit_kwargs, pruning in _exported_settings(prune_layer):
        configure(model, exit_kwargs, pruning)
        configure(scripted, exit_kwargs, pruning)
        onnx_run, _ = export_vilt_onnx(model, folder / f"{len(rows)}.onnx", inputs(0), threads=torch.get_num_threads())
        runners = {"eager": lambda x: model(*x), "torchscript": lambda x: scripted(*x), "onnxruntime": onnx_run}
        times: dict[str, list[float]] = {runtime: [] for runtime in runners}
        agree = dict.fromkeys(runners, 0)
        worst = dict.fromkeys(runners, 0.0)
        for index in range(count + 3):
            example = inputs(index % count)
            expected = model(*example)
            order = list(runners)[index % 3 :] + list(runners)[: index % 3]
            for runtime in order:
                start = time.perf_counter()
                logits = runners[runtime](example)
                if index >= 3:
                    times[runtime].append(time.perf_counter() - start)
                    agree[runtime] += int(logits.argmax() == expected.argmax())
                    worst[runtime] = max(worst[runtime], float((logits - expected).abs().max()))
        for runtime in runners:
            rows.append(
                {
                    "setting": name,
                    "runtime": runtime,
                    "latency_ms": round(statistics.median(times[runtime]) * 1e3, 3),
                    "top1_agreement": agree[runtime] / count,
                    "max_abs_diff": worst[runtime],
                }
            )
    configure(model, {}, (0, 1.0))
    return rows


def _int8_files(model: MobiVqaVilt, test, limit: int, count: int, folder: Path) -> dict:
    """int8 as ``mobilevt export --quantize int8`` writes it, on each runtime: the full model's
    ONNX file and ExecuTorch program with their linears in dynamic int8 (onnxruntime
    ``quantize_dynamic``; PT2E with XNNPACK's dynamic quantizer), against the fp32 file of the
    same runtime: accuracy on the first ``limit`` test questions, file size, and batch-1
    latency (median over ``count`` questions, interleaved)."""
    from mobilevt.export.vilt import export_vilt_executorch, export_vilt_onnx

    pad = model.arch.max_text_len  # the ExecuTorch program takes questions padded to it

    def inputs(rows: torch.Tensor, padded: bool = False) -> tuple[torch.Tensor, ...]:
        input_ids, attention_mask, pixel_values, _ = test.batch(rows)
        if padded:
            input_ids = torch.nn.functional.pad(input_ids, (0, pad - input_ids.shape[1]))
            attention_mask = torch.nn.functional.pad(attention_mask, (0, pad - attention_mask.shape[1]))
        return input_ids, attention_mask, pixel_values, torch.ones_like(pixel_values[:, 0], dtype=torch.long)

    configure(model, {}, (0, 1.0))
    runners, sizes = {}, {}
    threads = torch.get_num_threads()
    # called outside inference mode: there, ExecuTorch's lowering in this study grew without
    # bound (24 GB in a minute, ExecuTorch 1.5)
    for int8 in (False, True):
        name = "int8" if int8 else "fp32"
        path = folder / f"full_{name}.onnx"
        example = inputs(torch.tensor([0]))
        runners[f"onnx {name}"], _ = export_vilt_onnx(model, path, example, threads=threads, int8=int8)
        sizes[f"onnx {name}"] = path.stat().st_size
        path = folder / f"full_{name}.pte"
        runners[f"executorch {name}"], _, _ = export_vilt_executorch(
            model, path, [inputs(torch.tensor([0]), padded=True)], int8=int8
        )
        sizes[f"executorch {name}"] = path.stat().st_size
    result: dict[str, dict] = {name: {"file_mb": round(size / 1e6, 2)} for name, size in sizes.items()}
    for name, run in runners.items():
        batch = 1 if name.startswith("executorch") else 256  # the program's batch is the example's
        correct = 0
        for start in range(0, limit, batch):
            rows = torch.arange(start, min(start + batch, limit))
            logits = run(inputs(rows, padded=batch == 1))
            correct += int((logits.argmax(dim=1) == test.labels[rows]).sum())
        result[name]["accuracy"] = correct / limit
    times: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners)
    for index in range(count + 3):
        example = {False: inputs(torch.tensor([index % count])), True: inputs(torch.tensor([index % count]), True)}
        for name in order[index % len(order) :] + order[: index % len(order)]:
            start = time.perf_counter()
            runners[name](example[name.startswith("executorch")])
            if index >= 3:
                times[name].append(time.perf_counter() - start)
    for name in runners:
        result[name]["latency_ms"] = round(statistics.median(times[name]) * 1e3, 3)
    return result


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", default="runs/mobivqa")
    parser.add_argument("--out", default="bench-results/mobivqa")
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--continue-epochs", type=float, default=0.0, help="train a loaded model this much further")
    parser.add_argument("--retrain-exits", action="store_true", help="train a loaded model's exits again")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--vocab-size", type=int, default=200)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--exit-epochs", type=float, default=0.3, help="epochs of the exit heads")
    parser.add_argument("--predictor-epochs", type=float, default=2.0, help="epochs of the exit predictor")
    parser.add_argument("--calibration-fraction", type=float, default=0.1, help="training images held out")
    parser.add_argument("--min-agreement", type=float, default=0.99, help="the predictor's bar on held-out questions")
    parser.add_argument("--prune-layer", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="random flips and shifts of the training images (default on)",
    )
    parser.add_argument("--eval-limit", type=int, default=None, help="accuracy on the first N test questions")
    parser.add_argument("--latency-questions", type=int, default=200)
    parser.add_argument(
        "--exported",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the exits and pruning in TorchScript and ONNX files beside eager (default on)",
    )
    parser.add_argument(
        "--int8-files-only",
        action="store_true",
        help="only the int8 files against fp32 on ONNX Runtime and ExecuTorch, for a trained model in --run-dir "
        "(writes int8_files.md/json to --out)",
    )
    return parser.parse_args()


def _evaluate(models: dict[str, MobiVqaVilt], model: MobiVqaVilt, test, answers, args) -> list[dict]:
    """Accuracy and mean layers of every setting (fp32, and int8 for some) on the test split."""
    rows = []
    groups = easy_vqa_answer_groups(answers)
    for precision in models:
        for name, exit_kwargs, pruning in settings(model, args.prune_layer):
            if precision == "int8" and not name.startswith(INT8_SETTINGS):
                continue
            configure(models[precision], exit_kwargs, pruning)
            result = evaluate_on_split(models[precision], test, limit=args.eval_limit, answer_groups=groups)
            setting = name if precision == "fp32" else f"int8: {name}"
            rows.append({"setting": setting, "precision": precision, "exit": exit_kwargs, "pruning": list(pruning)})
            rows[-1] |= result
            print(
                f"{setting}: accuracy {result['accuracy']:.4f} ({result['by_group']}), "
                f"layers {result['mean_layers']:.2f}"
            )
    return rows


def _time(models: dict[str, MobiVqaVilt], rows: list[dict], test, count: int) -> None:
    """Batch-1 latency of every row: each question runs every setting in turn (the first
    rotating), three warm-up passes; medians, and ratios to the full model."""
    times: list[list[float]] = [[] for _ in rows]
    for index in range(count + 3):
        input_ids, attention_mask, pixel_values, _ = test.batch(torch.tensor([index % count]))
        shift = index % len(rows)
        for i in list(range(shift, len(rows))) + list(range(shift)):
            model = models[rows[i]["precision"]]
            configure(model, rows[i]["exit"], tuple(rows[i]["pruning"]))
            start = time.perf_counter()
            model(input_ids, attention_mask, pixel_values)
            if index >= 3:
                times[i].append(time.perf_counter() - start)
    full_ms = statistics.median(times[0]) * 1e3
    for row, values in zip(rows, times):
        row["latency_ms"] = round(statistics.median(values) * 1e3, 3)
        row["latency_ratio"] = round(row["latency_ms"] / full_ms, 3)


def _image_size_of_saved_model(args, run_dir: Path) -> None:
    """A saved model is trained and measured on photos of its own size: the continuation
    commands once left --image-size at its default (64) for a model made at 96, and its
    later cycles and tables ran at 64 image tokens instead of 144."""
    config_path = run_dir / "config.json"
    if args.retrain or not config_path.exists():
        return
    saved = json.loads(config_path.read_text())["arch"]["image_size"]
    given = any(arg == "--image-size" or arg.startswith("--image-size=") for arg in sys.argv[1:])
    if given and args.image_size != saved:
        raise SystemExit(f"{run_dir} holds a model made for {saved}x{saved} photos, not --image-size {args.image_size}")
    args.image_size = saved


def main() -> None:
    args = _arguments()
    torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _image_size_of_saved_model(args, run_dir)
    train, test, answers, _ = load_easy_vqa(run_dir / "vocab.txt", image_size=args.image_size)
    print(f"easy-VQA: {len(train)} training and {len(test)} test questions, {len(answers)} answers")
    model, config = train_or_load(args, train, answers)
    if args.int8_files_only:
        _int8_files_only(model, test, args)
        return
    models = {"fp32": model, "int8": dynamic_int8(model)}
    with torch.inference_mode():
        rows = _evaluate(models, model, test, answers, args)
        model.set_early_exit()
        model.set_token_pruning(0)
        oracle = exit_oracle(model, test if args.eval_limit is None else test.subset(torch.arange(args.eval_limit)))
        count = min(args.latency_questions, len(test))
        _time(models, rows, test, count)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        exported = _exported(model, test, args.prune_layer, count, out) if args.exported else []
    limit = len(test) if args.eval_limit is None else min(args.eval_limit, len(test))
    int8_files = _int8_files(model, test, limit, count, out) if args.exported else {}
    report = {
        "torch": torch.__version__,
        "threads": args.threads,
        "model": config,
        "test_questions": rows[0]["questions"],
        "latency_questions": count,
        "rows": rows,
        "oracle": oracle,
        "exported": exported,
        "int8_files": int8_files,
    }
    table = _table(report, model)
    print(table)
    write_text_atomic(out / "mobivqa.md", table)
    write_text_atomic(out / "mobivqa.json", json.dumps(report, indent=2))
    _plot(rows, out / "mobivqa.png")


def _int8_files_only(model: MobiVqaVilt, test, args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    limit = len(test) if args.eval_limit is None else min(args.eval_limit, len(test))
    files = _int8_files(model, test, limit, min(args.latency_questions, len(test)), out)
    report = {"torch": torch.__version__, "threads": args.threads, "test_questions": limit, "int8_files": files}
    lines = "\n".join(_int8_table(files)[1:]) + "\n"
    print(lines)
    write_text_atomic(out / "int8_files.md", lines)
    write_text_atomic(out / "int8_files.json", json.dumps(report, indent=2))


def _table(report: dict, model: MobiVqaVilt) -> str:
    config, rows, oracle = report["model"], report["rows"], report["oracle"]
    calibration = config.get("calibration", {})
    lines = [
        f"ViLT on easy-VQA ({config['arch']}), exits after layers {config['exit_layers']}, predictor after layer "
        f"{config['predictor_layer']} (risk {model.predictor_risk:.3g}, calibrated on "
        f"{calibration.get('held_out_questions', '?')} held-out training questions for "
        f"{calibration.get('min_agreement', '?')} agreement with the full model); accuracy on "
        f"{report['test_questions']} test questions, batch-1 latency median over {report['latency_questions']} "
        f"questions (interleaved), torch {report['torch']}, {report['threads']} threads",
        "",
        "| setting | accuracy | colour / shape / yes-no questions | mean layers | latency (ms) | latency / full |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        by_group = " / ".join(f"{row['by_group'][g] * 100:.1f}%" for g in ("colour", "shape", "yes/no"))
        lines.append(
            f"| {row['setting']} | {row['accuracy'] * 100:.2f}% | {by_group} | {row['mean_layers']:.2f} "
            f"| {row['latency_ms']:.2f} | {row['latency_ratio']:.2f} |"
        )
    lines += [
        "",
        "Oracle exits on the same test questions (no predictor could do better):",
        "",
        "| every question stops at | accuracy | mean layers |",
        "|---|---:|---:|",
        f"| its earliest exit that gives the full model's answer | {oracle['agreeing']['accuracy'] * 100:.2f}% "
        f"| {oracle['agreeing']['mean_layers']:.2f} |",
        f"| its earliest correct exit | {oracle['correct']['accuracy'] * 100:.2f}% "
        f"| {oracle['correct']['mean_layers']:.2f} |",
    ]
    if report["exported"]:
        lines += [
            "",
            "The same settings in the files an app ships (one TorchScript file switched by its methods, an ONNX "
            "file per setting), batch-1 latency (median, interleaved with eager on the same questions) and "
            "agreement with eager:",
            "",
            "| setting | runtime | latency (ms) | / eager | top-1 agreement | max-abs logit diff |",
            "|---|---|---:|---:|---:|---:|",
        ]
        eager = {row["setting"]: row["latency_ms"] for row in report["exported"] if row["runtime"] == "eager"}
        for row in report["exported"]:
            lines.append(
                f"| {row['setting']} | {row['runtime']} | {row['latency_ms']:.2f} | "
                f"{row['latency_ms'] / eager[row['setting']]:.2f} | {row['top1_agreement'] * 100:.1f}% | "
                f"{row['max_abs_diff']:.1e} |"
            )
    if report["int8_files"]:
        lines += _int8_table(report["int8_files"])
    return "\n".join(lines) + "\n"


def _int8_table(files: dict[str, dict]) -> list[str]:
    lines = [
        "",
        "int8 as `mobilevt export --quantize int8` writes it (dynamic int8 linears), each against the fp32 file "
        "of its runtime:",
        "",
        "| runtime | file | accuracy | size (MB) | batch-1 latency (ms) |",
        "|---|---|---:|---:|---:|",
    ]
    for name, row in files.items():
        runtime, kind = name.split()
        runtime = {"onnx": "ONNX Runtime", "executorch": "ExecuTorch (XNNPACK)"}[runtime]
        lines.append(
            f"| {runtime} | {kind} | {row['accuracy'] * 100:.2f}% | {row['file_mb']:.2f} | {row['latency_ms']:.2f} |"
        )
    return lines


def _place_numbers(axes, points: list[tuple[float, float]], size: float = 14.0) -> None:
    """Each point's number beside it, at the first of a ring of offsets (in pixels) whose
    label box overlaps no label placed before, joined to its point by a thin line."""
    offsets = [
        (r * dx, r * dy)
        for r in (12, 26, 40, 54)
        for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (0, 1), (-1, 0), (0, -1))
    ]
    placed: list[tuple[float, float]] = []
    for number, (x, y) in enumerate(points, start=1):
        px, py = axes.transData.transform((x, y))
        choice = offsets[-1]
        for dx, dy in offsets:
            if all(abs(px + dx - qx) >= size or abs(py + dy - qy) >= size for qx, qy in placed):
                choice = (dx, dy)
                break
        placed.append((px + choice[0], py + choice[1]))
        axes.annotate(
            str(number), (x, y), xytext=choice, textcoords="offset pixels", fontsize=7, ha="center", va="center",
            arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.5"},
        )  # fmt: skip


def _plot(rows: list[dict], path: Path) -> None:
    """Accuracy against latency, each point numbered and named in a legend beside the axes
    (names written next to close points would overlap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (axes, legend) = plt.subplots(1, 2, figsize=(13, 6), gridspec_kw={"width_ratios": [3, 2]})
    for row in rows:
        marker = "s" if row["precision"] == "int8" else "o"
        axes.scatter(row["latency_ratio"], row["accuracy"] * 100, marker=marker, s=40, alpha=0.6)
    figure.canvas.draw()  # fixes the data-to-pixel transform the labels are placed with
    _place_numbers(axes, [(row["latency_ratio"], row["accuracy"] * 100) for row in rows])
    axes.set_xlabel("batch-1 latency / full model (median, interleaved)")
    axes.set_ylabel("easy-VQA test accuracy (%)")
    axes.set_title("MobiVQA exits, token pruning and int8 (squares) on a small ViLT")
    axes.grid(True, alpha=0.3)
    legend.axis("off")
    names = [f"{number:>2}  {row['setting']}" for number, row in enumerate(rows, start=1)]
    legend.text(0.0, 1.0, "\n".join(names), va="top", family="monospace", fontsize=8, transform=legend.transAxes)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)


if __name__ == "__main__":
    main()
