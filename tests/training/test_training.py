"""Training: config validation, schedule and weight-decay groups, a real run on digits that
exports loadable weights, exact resume after SIGKILL, and clear errors for bad input."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch

import mobilevt
from mobilevt.data import DatasetLayoutError
from mobilevt.training import ConfigError, TrainingError, builtin_recipes, load_config, train, warmup_cosine
from mobilevt.training.trainer import parameter_groups

pytest.importorskip("sklearn")  # the digits dataset


def test_recipes_parse_and_match_the_paper():
    assert {"digits", "mobilevit_imagenet", "mobilevitv2_imagenet", "finetune_folder"} <= set(builtin_recipes())
    for name in builtin_recipes():
        load_config(name)
    v1 = load_config("mobilevit_imagenet")
    assert (v1.epochs, v1.optim.lr, v1.optim.min_lr, v1.optim.weight_decay, v1.optim.warmup_steps) == (
        300,
        2e-3,
        2e-4,
        0.01,
        3000,
    )
    assert v1.label_smoothing == 0.1 and v1.ema_decay == pytest.approx(1 - 0.0005) and v1.sampler.name == "multiscale"


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="optim.learning_rate"):
        load_config("digits", ["optim.learning_rate=0.1"])
    with pytest.raises(ConfigError, match="epochs must be int"):
        load_config("digits", ["epochs=many"])
    with pytest.raises(ConfigError, match="batch_size must be positive"):
        load_config("digits", ["batch_size=0"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: mobilevit_xxs\nsampler:\n  nmae: fixed\n")
    with pytest.raises(ConfigError, match=r"sampler.nmae\. Did you mean: sampler.name\?"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"optim.warmup_step\. Did you mean: optim.warmup_steps\?"):
        load_config("digits", ["optim.warmup_step=10"])
    config = load_config("digits", ["optim.lr=1e-3", "epochs=3", "optim.clip_grad_norm=1"])
    assert (config.optim.lr, config.epochs, config.optim.clip_grad_norm) == (1e-3, 3, 1.0)
    with pytest.raises(ConfigError, match=r"data.eval_crop must be in \(0, 1\]"):
        load_config("digits", ["data.eval_crop=1.2"])


def test_eval_crop_sets_what_evaluation_and_the_saved_preprocessing_keep():
    """The digits fill their 8x8 frame: the recipe evaluates on the whole image, and the
    weights it saves tell predict / export to do the same; ImageNet recipes keep 0.875."""
    from mobilevt.training.data import EvalDataset, preprocess_config_for_eval

    digits = load_config("digits")
    assert digits.data.eval_crop == 1.0 and preprocess_config_for_eval(digits).resize_size == 64
    assert preprocess_config_for_eval(load_config("mobilevit_imagenet")).resize_size == 293  # 256 / 0.875
    image = torch.zeros(3, 8, 8, dtype=torch.uint8)
    image[:, :, 0] = 255  # a stroke on the left edge
    whole, cropped = EvalDataset([(image, 0)], 64, 1.0)[0][0], EvalDataset([(image, 0)], 64, 0.875)[0][0]
    # the stroke is 1/8 of the width: all of it kept, or about half of it cut off by the crop
    assert whole.mean() == pytest.approx(1 / 8, abs=0.01) and cropped.mean() < 0.7 * whole.mean()


def test_warmup_cosine_schedule():
    lr, min_lr = 2e-3, 2e-4
    assert warmup_cosine(0, 1000, 100, lr, min_lr) == pytest.approx(lr / 100)
    assert warmup_cosine(99, 1000, 100, lr, min_lr) == pytest.approx(lr)
    assert warmup_cosine(550, 1000, 100, lr, min_lr) == pytest.approx((lr + min_lr) / 2)
    assert warmup_cosine(1000, 1000, 100, lr, min_lr) == pytest.approx(min_lr)


def test_weight_decay_skips_norms_and_biases():
    model = mobilevt.create_model("mobilevit_xxs", num_classes=10)
    decay, no_decay = parameter_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim > 1 for p in decay["params"])
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert "stem.bn.weight" in skipped and "head.bias" in skipped and "head.weight" not in skipped
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def _digits(tmp_path, *overrides):
    return load_config("digits", [f"output_dir={tmp_path}", "epochs=2", *overrides])


@pytest.mark.slow
def test_digits_run_exports_weights_that_predict(digits_run):
    # the 4-epoch digits run (conftest's digits_run, shared with the int8 tests): train()'s result
    result = json.loads((digits_run / "result.json").read_text())
    run = digits_run / "run"
    assert result["epochs_run"] == 4 and result["best_metric"] > 80  # 4 epochs instead of the recipe's 12
    assert (run / "metrics.csv").read_text().count("\n") == 5
    if importlib.util.find_spec("matplotlib"):
        assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    if importlib.util.find_spec("tensorboard"):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(run / "tensorboard"))
        events.Reload()
        assert len(events.Scalars("val/top1")) == 4 and len(events.Scalars("train/loss")) == result["steps"]
    model = mobilevt.create_model("mobilevit_xxs", weights=result["best_path"])
    assert model.num_classes == 10 and model.class_names == [str(i) for i in range(10)]
    assert model.preprocess.input_size == (64, 64)
    from mobilevt.training.data import DigitsDataset

    val = DigitsDataset("val")
    predictions = mobilevt.predict(model, [val[i][0] for i in range(40)], topk=1)
    accuracy = sum(int(p.top[0].name) == val[i][1] for i, p in enumerate(predictions)) / 40
    assert accuracy > 0.75


def _final_weights(folder):
    checkpoint = torch.load(folder / "last.pt", weights_only=True)
    return checkpoint["model"], checkpoint["ema"], checkpoint["state"]["step"]


@pytest.mark.slow
def test_resume_after_sigkill_ends_with_the_same_weights(tmp_path):
    # small multi-scale batches (the sampler's state is part of what resumes): 23 steps an epoch
    common = [
        "-m",
        "mobilevt",
        "train",
        "--config",
        "digits",
        "epochs=2",
        "save_every_steps=4",
        "sampler.image_size=32",
        "sampler.min_size=32",
        "sampler.max_size=48",
        "sampler.num_scales=2",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    whole = subprocess.run(
        [sys.executable, *common, f"output_dir={tmp_path / 'whole'}"], capture_output=True, text=True, env=env
    )
    assert whole.returncode == 0, whole.stderr[-2000:]

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(
        [sys.executable, *common, f"output_dir={interrupted}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (interrupted / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    # killed at once after the first checkpoint (step 4): a step takes far longer than the
    # poll, so the kill lands in the first epoch, after one or a few checkpoints
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = torch.load(interrupted / "last.pt", weights_only=True)["state"]["step"]
    resumed = subprocess.run(
        [sys.executable, *common, f"output_dir={interrupted}", "--resume"], capture_output=True, text=True, env=env
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming {interrupted / 'last.pt'}: epoch 0, step {killed_at}" in resumed.stdout

    model_a, ema_a, steps_a = _final_weights(tmp_path / "whole")
    model_b, ema_b, steps_b = _final_weights(interrupted)
    assert steps_a == steps_b and 0 < killed_at < steps_a, (killed_at, steps_a)
    for key in model_a:
        assert torch.equal(model_a[key], model_b[key]), key
    for key in ema_a:
        assert torch.equal(ema_a[key], ema_b[key]), key


def test_ctrl_c_prints_one_line_with_the_resume_command(tmp_path):
    out = tmp_path / "run"
    overrides = [
        "epochs=2",
        "save_every_steps=2",
        "data.workers=0",
        "sampler.image_size=32",
        "sampler.min_size=32",
        "sampler.max_size=48",
        "sampler.num_scales=2",
        f"output_dir={out}",
    ]
    # a terminal's Ctrl-C: SIGINT with its default action (a pytest-xdist worker may ignore
    # SIGINT, and a child would inherit that, so Python would install no KeyboardInterrupt)
    process = subprocess.Popen(
        [sys.executable, "-m", "mobilevt", "train", "--config", "digits", *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr[-2000:]
    epoch, step = (
        torch.load(out / "last.pt", weights_only=True)["sampler"]["epoch"],
        torch.load(out / "last.pt", weights_only=True)["state"]["step"],
    )
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"interrupted; last good checkpoint {out / 'last.pt'} (epoch {epoch}, step {step}); "), last
    command = shlex.split(last.split("resume with: ", 1)[1])
    assert command == ["mobilevt", "train", "--config", "digits", *overrides, "--resume"]


def test_interrupt_report_survives_a_corrupt_checkpoint(tmp_path):
    from mobilevt.training.trainer import checkpoint_position

    (tmp_path / "last.pt").write_bytes(b"half a file")
    assert checkpoint_position(tmp_path / "last.pt") is None and checkpoint_position(tmp_path / "none.pt") is None


def test_stop_at_metric_ends_the_run_after_the_epoch_that_reaches_it(tmp_path, capsys):
    """stop_at_metric: the run stops after the first epoch whose validation metric reaches it,
    with the schedule of all its epochs (a truncated run, not a shorter one)."""
    result = train(_digits(tmp_path, "epochs=3", "stop_at_metric=1.0", "ema_decay=null", "optim.warmup_steps=1"))
    assert result.epochs_run == 1 and result.best_epoch == 0 and result.best_metric >= 1.0
    steps_per_epoch = result.steps
    row = result.history[0]
    config = _digits(tmp_path, "optim.warmup_steps=1").optim
    # the learning rate after epoch 0 is the 3-epoch schedule's, not a 1-epoch schedule's end
    expected = warmup_cosine(steps_per_epoch, 3 * steps_per_epoch, config.warmup_steps, config.lr, config.min_lr)
    assert row["lr"] == pytest.approx(expected) and row["lr"] > 0.5 * config.lr  # a 1-epoch run ends at min_lr
    assert f"stopping after epoch 0: best val top1 {result.best_metric:.4f} reached stop_at_metric 1" in (
        capsys.readouterr().out
    )


def test_a_new_run_refuses_an_earlier_runs_folder(tmp_path):
    train(_digits(tmp_path, "max_steps=2", "epochs=1"))
    best = (tmp_path / "best.safetensors").read_bytes()
    with pytest.raises(
        TrainingError, match=r"already holds a training run \(last.pt, best.safetensors.*--resume.*--overwrite"
    ):
        train(_digits(tmp_path, "max_steps=2", "epochs=1", "seed=1"))
    assert (tmp_path / "best.safetensors").read_bytes() == best
    (tmp_path / "steps.csv").write_text("stale\n")
    train(_digits(tmp_path, "max_steps=2", "epochs=1", "seed=1"), overwrite=True)
    assert "stale" not in (tmp_path / "steps.csv").read_text()
    assert (tmp_path / "best.safetensors").read_bytes() != best


def test_bad_inputs_fail_clearly(tmp_path):
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(_digits(tmp_path / "none"), resume=True)
    train(_digits(tmp_path / "xxs", "max_steps=2", "epochs=1"))
    with pytest.raises(TrainingError, match="mobilevit_xxs run"):
        train(_digits(tmp_path / "xxs", "model=mobilevitv2_050"), resume=True)
    one_class = tmp_path / "folder"
    (one_class / "train" / "cat").mkdir(parents=True)
    (one_class / "val" / "cat").mkdir(parents=True)
    import shutil

    from conftest import real_photos

    for photo in real_photos(2):
        shutil.copy(photo, one_class / "train" / "cat" / photo.name)
        shutil.copy(photo, one_class / "val" / "cat" / photo.name)
    with pytest.raises(DatasetLayoutError, match="at least 2"):
        train(load_config(None, [f"data.dataset={one_class}", f"output_dir={tmp_path / 'o'}"]))
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "val").mkdir()
    with pytest.raises(DatasetLayoutError, match="train"):
        train(load_config(None, [f"data.dataset={empty}", f"output_dir={tmp_path / 'o'}"]))
    run = subprocess.run(
        [sys.executable, "-m", "mobilevt", "train", "--config", "digits", "optim.lr=fast"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1 and "optim.lr must be float" in run.stderr


@pytest.mark.slow
def test_two_gloo_processes_follow_the_single_process_loss_curve(tmp_path):
    """DDP with 2 CPU processes x 16 images vs 1 process x 32: same samples, same
    augmentations, averaged gradients. The losses differ only through BatchNorm statistics
    (16 vs 32 images) and dropout masks: within 3% per step (measured: 0.5%)."""
    import csv

    common = ["--config", "digits", "epochs=1", "max_steps=8", "sampler.name=fixed", "data.workers=0"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = subprocess.run(
        [sys.executable, "-m", "mobilevt", "train", *common, "batch_size=32", f"output_dir={tmp_path / 'one'}"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "mobilevt",
            "train",
            *common,
            "batch_size=16",
            f"output_dir={tmp_path / 'two'}",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("best val top-1") == 1  # rank 0 reports
    rows = [list(csv.DictReader(open(tmp_path / run / "steps.csv"))) for run in ("one", "two")]
    assert len(rows[0]) == len(rows[1]) == 8
    for a, b in zip(*rows):
        assert a["global_batch"] == b["global_batch"] == "32"
        assert abs(float(a["loss"]) - float(b["loss"])) <= 0.03 * float(a["loss"]), (a, b)


class _PhotosWithBrokenItems(torch.utils.data.Dataset):
    """Real photos as uint8 tensors plus undecodable items (``None``), like a folder
    with corrupt files."""

    def __init__(self, photos, broken_at: set[int]):
        self.images = [mobilevt.load_image(p) for p in photos]
        self.broken_at = broken_at
        self.length = len(self.images) + len(broken_at)
        self.targets = [i % 7 for i in range(self.length)]
        self.order: list = []
        photo = iter(self.images)
        for i in range(self.length):
            self.order.append(None if i in broken_at else next(photo))

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        return self.order[index], self.targets[index]


def _designed_validation(limit=11):
    """The validation set, an oracle model whose ranking is designed in advance, and the
    top-1 / top-5 (%) that the design implies."""
    from conftest import real_photos
    from oracle import OracleClassifier, designed_logits

    from mobilevt.training.data import EvalDataset

    data = _PhotosWithBrokenItems(real_photos(limit), broken_at={1, 4})
    good = [i for i in range(len(data)) if i not in data.broken_at]
    targets = [data.targets[i] for i in good]
    first = [t if k % 3 == 0 else (t + 1) % 7 for k, t in enumerate(targets)]  # every third image right
    logits = designed_logits(targets, first, num_classes=7)
    inputs = torch.stack([EvalDataset(data, 32)[i][0] for i in good])
    model = OracleClassifier(inputs, logits, None)
    hits1 = sum(f == t for f, t in zip(first, targets))
    hits5 = hits1 + sum(1 for k, (f, t) in enumerate(zip(first, targets)) if f != t and k % 2 == 0)
    return data, model, 100.0 * hits1 / len(good), 100.0 * hits5 / len(good)


def _validate_rank(rank, world_size, port, out):
    import json

    import torch.distributed as dist

    from mobilevt.training.tasks import evaluate_classifier, validation_loader

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    data, model, _, _ = _designed_validation()
    loader = validation_loader(data, 32, batch_size=3, workers=0, rank=rank, world_size=world_size)
    shard = list(loader.dataset.indices)
    top1, top5, failed = evaluate_classifier(model, loader, torch.device("cpu"), distributed=True)
    dist.destroy_process_group()
    with open(f"{out}.{rank}", "w") as handle:
        json.dump({"top1": top1, "top5": top5, "failed": failed, "shard": shard}, handle)


@pytest.mark.slow
def test_validation_is_sharded_over_ranks_with_exact_totals_and_broken_images_counted(tmp_path):
    """Each rank validates its own images (no padding) and the summed counts equal the
    designed accuracy of the whole set; the two undecodable items are counted, not
    crashed on."""
    import json
    import socket

    import torch.multiprocessing as mp

    from mobilevt.training.tasks import evaluate_classifier, validation_loader

    data, model, top1, top5 = _designed_validation()
    single = evaluate_classifier(model, validation_loader(data, 32, batch_size=4, workers=0), torch.device("cpu"))
    assert single == (pytest.approx(top1), pytest.approx(top5), 2)
    assert 0 < top1 < top5 < 100  # the design exercises hits and misses of both kinds
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_validate_rank, args=(2, port, str(tmp_path / "rank")), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank.{r}").read_text()) for r in range(2)]
    for result in results:
        assert (result["top1"], result["top5"], result["failed"]) == (pytest.approx(top1), pytest.approx(top5), 2)
    shards = [set(r["shard"]) for r in results]
    assert not shards[0] & shards[1] and shards[0] | shards[1] == set(range(len(data)))


def test_undecodable_images_are_skipped_and_counted_in_a_run(tmp_path):
    import csv
    import shutil

    from conftest import real_photos

    photos = real_photos(8)
    root = tmp_path / "data"
    for split in ("train", "val"):
        for i, photo in enumerate(photos):
            folder = root / split / ("even" if i % 2 == 0 else "odd")
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(photo, folder / photo.name)
        (root / split / "odd" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mobilevt",
            "train",
            "--config",
            "finetune_folder",
            f"data.dataset={root}",
            "model=mobilevit_xxs",
            "weights=null",
            "epochs=1",
            "batch_size=4",
            "sampler.image_size=64",
            "sampler.name=fixed",
            "data.workers=0",
            f"output_dir={tmp_path / 'out'}",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="2"),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    row = next(csv.DictReader(open(tmp_path / "out" / "metrics.csv")))
    assert (row["failed_images"], row["val_failed_images"]) == ("1", "1")
    assert "skipped undecodable images: 1 train, 1 val" in run.stdout


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import torch.nn.functional as F

    real_cross_entropy = F.cross_entropy
    calls = {"n": 0}

    def diverging(*args, **kwargs):  # the 6th training step (index 5) diverges
        calls["n"] += 1
        loss = real_cross_entropy(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 6 else loss

    monkeypatch.setattr(F, "cross_entropy", diverging)
    message = r"loss is nan at step 5 .*last good checkpoint is .*last.pt \(step 4\)\. Lower optim.lr"
    with pytest.raises(TrainingError, match=message):
        train(_digits(tmp_path, "save_every_steps=2", "data.workers=0"))
    checkpoint = torch.load(tmp_path / "last.pt", weights_only=True)
    assert checkpoint["state"]["step"] == 4
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())
