"""MobiVQA optimisations on a ViLT trained on easy-VQA: accuracy vs batch-1 latency.

Trains (or loads from ``--run-dir``) a small ViLT on easy-VQA (``pip install easy-vqa``),
then its exit heads and exit predictor with the backbone frozen, and measures for each
setting (full model, confidence exit at several thresholds, exit predictor, fixed exits,
question-guided image-token pruning at several keep ratios, combinations):

- accuracy and mean number of layers run on the easy-VQA test questions (batched:
  per-question results equal batch-1 results for every mode);
- batch-1 latency: the median over ``--latency-questions`` test questions, every setting
  run on each question in turn (interleaved, the first one rotating), reported also as a
  ratio to the full model measured in the same run.

Writes ``mobivqa.md`` (table), ``mobivqa.json`` and ``mobivqa.png`` (accuracy vs latency)
to ``--out``. The trained weights (safetensors), the vocabulary and the config live in
``--run-dir`` (git-ignored ``runs/``); delete it (or pass ``--retrain``) to train again,
or pass ``--continue-epochs`` to train the saved model further.

    python studies/bench_mobivqa.py --run-dir runs/mobivqa --out bench-results/mobivqa
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from mobilevt.fileio import atomic_path, write_text_atomic
from mobilevt.models.mobivqa import MobiVqaVilt, build_vilt_b32_vqa
from mobilevt.training.vqa import easy_vqa_answer_groups, evaluate_on_split, load_easy_vqa, train_exit_heads, train_vqa


def build_model(config: dict, answers: list[str]) -> MobiVqaVilt:
    model = build_vilt_b32_vqa(num_answers=len(answers), answers=answers, **config["arch"])
    model.add_early_exits(config["exit_layers"], predictor_layer=config["predictor_layer"])
    return model


def train_or_load(args, train, answers) -> tuple[MobiVqaVilt, dict]:
    from safetensors.torch import load_file

    run_dir = Path(args.run_dir)
    weights_path, config_path = run_dir / "model.safetensors", run_dir / "config.json"
    if weights_path.exists() and config_path.exists() and not args.retrain:
        config = json.loads(config_path.read_text())
        model = build_model(config, answers)
        model.load_state_dict(load_file(str(weights_path)))
        print(f"loaded {weights_path}")
        if args.continue_epochs <= 0:
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
        )
        config.setdefault("continued", []).append(
            {"epochs": args.continue_epochs, "seconds": round(time.perf_counter() - start, 1)}
        )
        start = time.perf_counter()
        train_exit_heads(model, train, epochs=args.exit_epochs, predictor_epochs=args.exit_epochs)
        config["exit_train_seconds"] = round(time.perf_counter() - start, 1)
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
    }
    torch.manual_seed(0)
    model = build_vilt_b32_vqa(num_answers=len(answers), answers=answers, **config["arch"])
    start = time.perf_counter()
    train_vqa(model, train, epochs=args.epochs, batch_size=64, lr=args.lr, augment=args.augment)
    config["augment"] = args.augment
    config["train_seconds"] = round(time.perf_counter() - start, 1)
    model.add_early_exits(config["exit_layers"], predictor_layer=config["predictor_layer"])
    start = time.perf_counter()
    train_exit_heads(model, train, epochs=args.exit_epochs, predictor_epochs=args.exit_epochs)
    config["exit_train_seconds"] = round(time.perf_counter() - start, 1)
    run_dir.mkdir(parents=True, exist_ok=True)
    _save(model, config, weights_path, config_path)
    return model.eval(), config


def _save(model: MobiVqaVilt, config: dict, weights_path: Path, config_path: Path) -> None:
    from safetensors.torch import save_file

    with atomic_path(weights_path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    write_text_atomic(config_path, json.dumps(config, indent=2))


def settings(num_layers: int, exit_layers: list[int]) -> list[tuple[str, dict, tuple[int, float]]]:
    """(name, set_early_exit kwargs, (pruning layer, keep ratio))."""
    rows = [("full model", {}, (0, 1.0))]
    for threshold in (0.6, 0.8, 0.9, 0.99):
        rows.append((f"confidence exit >= {threshold}", {"threshold": threshold}, (0, 1.0)))
    rows.append(("exit predictor", {"predictor": True}, (0, 1.0)))
    for layer in exit_layers:
        rows.append((f"fixed exit after layer {layer}", {"layer": layer}, (0, 1.0)))
    for ratio in (0.75, 0.5, 0.25):
        rows.append((f"prune after layer 1, keep {ratio}", {}, (1, ratio)))
    rows.append(("prune 0.5 + confidence >= 0.99", {"threshold": 0.99}, (1, 0.5)))
    rows.append(("prune 0.5 + exit predictor", {"predictor": True}, (1, 0.5)))
    return rows


def configure(model: MobiVqaVilt, exit_kwargs: dict, pruning: tuple[int, float]) -> None:
    model.set_early_exit(**exit_kwargs)
    model.set_token_pruning(*pruning)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", default="runs/mobivqa")
    parser.add_argument("--out", default="bench-results/mobivqa")
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--continue-epochs", type=float, default=0.0, help="train a loaded model this much further")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--vocab-size", type=int, default=200)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--exit-epochs", type=float, default=0.3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="random flips and shifts of the training images (default on)",
    )
    parser.add_argument("--eval-limit", type=int, default=None, help="accuracy on the first N test questions")
    parser.add_argument("--latency-questions", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    train, test, answers, _ = load_easy_vqa(run_dir / "vocab.txt", image_size=args.image_size)
    print(f"easy-VQA: {len(train)} training and {len(test)} test questions, {len(answers)} answers")
    model, config = train_or_load(args, train, answers)
    rows = []
    with torch.inference_mode():
        for name, exit_kwargs, pruning in settings(model.num_layers, model.exit_layers):
            configure(model, exit_kwargs, pruning)
            result = evaluate_on_split(
                model, test, limit=args.eval_limit, answer_groups=easy_vqa_answer_groups(answers)
            )
            rows.append({"setting": name, "exit": exit_kwargs, "pruning": list(pruning), **result})
            print(
                f"{name}: accuracy {result['accuracy']:.4f} (by answer kind {result['by_group']}), "
                f"mean layers {result['mean_layers']:.2f}"
            )
        # batch-1 latency, interleaved over settings on each question
        times: list[list[float]] = [[] for _ in rows]
        count = min(args.latency_questions, len(test))
        for index in range(count + 3):
            question = index % count
            input_ids, attention_mask, pixel_values, _ = test.batch(torch.tensor([question]))
            shift = index % len(rows)
            for i in list(range(shift, len(rows))) + list(range(shift)):
                configure(model, rows[i]["exit"], tuple(rows[i]["pruning"]))
                start = time.perf_counter()
                model(input_ids, attention_mask, pixel_values)
                if index >= 3:  # the first three passes warm up
                    times[i].append(time.perf_counter() - start)
    full_ms = statistics.median(times[0]) * 1e3
    for row, values in zip(rows, times):
        row["latency_ms"] = round(statistics.median(values) * 1e3, 3)
        row["latency_ratio"] = round(row["latency_ms"] / full_ms, 3)
    report = {
        "torch": torch.__version__,
        "threads": args.threads,
        "model": config,
        "test_questions": rows[0]["questions"],
        "latency_questions": count,
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"ViLT on easy-VQA ({config['arch']}), exits after layers {config['exit_layers']}, predictor after layer "
        f"{config['predictor_layer']}; accuracy on {rows[0]['questions']} test questions, batch-1 latency median over "
        f"{count} questions (interleaved), torch {torch.__version__}, {args.threads} threads",
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
    table = "\n".join(lines) + "\n"
    print(table)
    write_text_atomic(out / "mobivqa.md", table)
    write_text_atomic(out / "mobivqa.json", json.dumps(report, indent=2))
    _plot(rows, out / "mobivqa.png")


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    for row in rows:
        axes.scatter(row["latency_ratio"], row["accuracy"] * 100)
        axes.annotate(
            row["setting"],
            (row["latency_ratio"], row["accuracy"] * 100),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    axes.set_xlabel("batch-1 latency / full model (median, interleaved)")
    axes.set_ylabel("easy-VQA test accuracy (%)")
    axes.set_title("MobiVQA early exit and token pruning on a small ViLT")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)


if __name__ == "__main__":
    main()
