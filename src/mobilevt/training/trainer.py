"""The training loop: AdamW with warmup + cosine by step, label smoothing, EMA, gradient
clipping and accumulation, mixed precision on CUDA, multi-scale batches, DDP under
torchrun, atomic checkpoints that resume exactly, and logs a person can read."""
from __future__ import annotations

import contextlib
import csv
import functools
import json
import logging
import math
import os
import pickle
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from ..data.sampler import MultiScaleBatchSampler, MultiScaleDataset, Resolution, multiscale_resolutions
from ..fileio import atomic_path
from .config import TrainConfig, TrainingError
from .task_registry import get_task
from .tasks import TrainingTask

logger = logging.getLogger(__name__)

CHECKPOINT = "last.pt"
BEST = "best.safetensors"


@dataclass
class TrainResult:
    best_metric: float  # the task's primary validation metric (classification: top-1 %)
    best_epoch: int
    best_path: str
    epochs_run: int
    steps: int
    seconds: float
    history: list[dict]
    metric_name: str = "top1"

    @property
    def best_top1(self) -> float:
        """Classification's best validation top-1 (%), ``best_metric`` under its old name."""
        return self.best_metric


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float) -> float:
    """Learning rate at optimizer step ``step``: linear warmup to ``lr``, then cosine to ``min_lr``."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weights of convolutions and linear layers only: not on biases,
    norm layers, or 1-D parameters."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# what a run writes into its output folder (a new run refuses a folder holding any of them)
RUN_FILES = (CHECKPOINT, BEST, "steps.csv", "metrics.csv", "curves.png", "tensorboard")


def train(config: TrainConfig, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Train as ``config`` says; ``resume`` continues from ``output_dir/last.pt``.

    A new run refuses an output folder that holds an earlier run's files unless
    ``overwrite`` (then they are deleted first). ``config.task`` picks what is trained
    (:mod:`mobilevt.training.tasks`); the loop is the same for every task."""
    task: TrainingTask = get_task(config.task)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = _device(config.device, distributed)
    if distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if distributed else 0
    world_size = dist.get_world_size() if distributed else 1
    is_main = rank == 0
    out = Path(config.output_dir)
    if not resume:
        _claim_output_folder(out, overwrite, is_main)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    _seed_everything(config.seed)

    train_set, val_set, classes = task.build_datasets(config)
    model = task.create_model(config, list(classes))
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = _make_ema(model, config.ema_decay)
    wrapped: nn.Module = model
    if distributed:
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    if config.sampler.name == "multiscale":
        resolutions = multiscale_resolutions(
            (config.sampler.image_size,) * 2, config.batch_size, (config.sampler.min_size,) * 2,
            (config.sampler.max_size,) * 2, config.sampler.num_scales, config.sampler.divisor,
        )
    else:
        resolutions = [Resolution(config.sampler.image_size, config.sampler.image_size, config.batch_size)]
    sampler = MultiScaleBatchSampler(len(train_set), resolutions, seed=config.seed, rank=rank, world_size=world_size)
    train_data = MultiScaleDataset(
        train_set, functools.partial(task.train_transform, config=config), seed=config.seed, joint=True
    )
    # multi-scale epochs differ slightly in step count: the schedule's length is epoch 0's
    # (the cosine holds at min_lr if a run goes a few steps beyond)
    steps_per_epoch = math.ceil(len(sampler) / config.optim.accumulation_steps)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)

    optimizer = torch.optim.AdamW(
        parameter_groups(model, config.optim.weight_decay), lr=config.optim.lr, betas=tuple(config.optim.betas)
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_cosine(step, total_steps, config.optim.warmup_steps, config.optim.lr, config.optim.min_lr)
        / config.optim.lr,
    )
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
    use_amp = amp_dtype is not None and device.type == "cuda"
    if amp_dtype is not None and not use_amp and is_main:
        logger.warning("amp=%s applies on CUDA only; training in float32 on %s", config.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    state = {"epoch": 0, "step": 0, "best_metric": -1.0, "best_epoch": -1, "history": []}
    if resume:
        state = _load_checkpoint(out / CHECKPOINT, config, model, ema, optimizer, scheduler, scaler, sampler)
        if is_main:  # drop log rows written after the checkpoint by the interrupted run
            print(f"resuming {out / CHECKPOINT}: epoch {state['epoch']}, step {state['step']}", flush=True)
            _truncate_csv(out / "steps.csv", "step", state["step"])
            _truncate_csv(out / "metrics.csv", "epoch", state["epoch"] - 1)

    board = _tensorboard(out) if is_main else None
    val_loader = task.validation_loader(val_set, config, rank, world_size)
    metric = task.primary_metric
    csv_path = out / "metrics.csv"
    start = time.perf_counter()
    step = state["step"]
    saved_step: Optional[int] = step if resume else None  # the step of this run's newest last.pt
    stop = False
    for epoch in range(state["epoch"], config.epochs):
        sampler.set_epoch(epoch)  # keeps a resumed mid-epoch position for the same epoch
        train_data.epoch = epoch
        loader = DataLoader(
            train_data, batch_sampler=sampler, num_workers=config.data.workers, collate_fn=task.collate,
            pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(config.seed),
        )
        wrapped.train()
        epoch_loss, epoch_images, epoch_start = 0.0, 0, time.perf_counter()
        failed_images = 0  # undecodable training images met this epoch (skipped)
        micro = 0
        # batches consumed so far in this epoch: the DataLoader prefetches ahead of the
        # training step, so the sampler's own position is not where to resume
        batches_done = sampler.start_step
        bar = _progress(len(sampler), epoch, is_main)
        bar.update(batches_done)
        for images, targets, failed in loader:
            failed_images += failed
            batches_done += 1
            bar.update(1)
            if images is None:
                continue
            images = images.to(device, non_blocking=True)
            targets = task.targets_to(targets, device)
            if config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            images, targets = task.prepare_batch(images, targets)
            autocast = torch.autocast("cuda", dtype=amp_dtype) if use_amp else contextlib.nullcontext()
            with autocast:
                loss = task.training_loss(wrapped, images, targets, config)
            finite = torch.isfinite(loss.detach()).to(torch.int64).reshape(1)
            if distributed:  # every rank stops together instead of waiting for a rank that stopped
                dist.all_reduce(finite, op=dist.ReduceOp.MIN)
            if not bool(finite):
                kept = f"the last good checkpoint is {out / CHECKPOINT} (step {saved_step})" \
                    if saved_step is not None else "no checkpoint was written yet in this run"
                raise TrainingError(
                    f"loss is {loss.item()} at step {step} (epoch {epoch}) on rank {rank}; {kept}. "
                    "Lower optim.lr, raise optim.warmup_steps or set optim.clip_grad_norm"
                )
            scaler.scale(loss / config.optim.accumulation_steps).backward()
            micro += 1
            epoch_loss += loss.item() * len(images)
            epoch_images += len(images)
            if micro % config.optim.accumulation_steps:
                continue
            if config.optim.clip_grad_norm:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.optim.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            rate = epoch_images * world_size / max(1e-9, time.perf_counter() - epoch_start)
            step_loss = loss.detach().float()
            if distributed:  # the loss of the global batch, as one process would see it
                dist.all_reduce(step_loss)
                step_loss /= world_size
            if board is not None:
                board.add_scalar("train/loss", step_loss.item(), step)
                board.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                board.add_scalar("train/images_per_s", rate, step)
            if is_main:
                _append_csv(out / "steps.csv", {
                    "step": step, "epoch": epoch, "loss": step_loss.item(), "lr": scheduler.get_last_lr()[0],
                    "height": images.shape[-2], "width": images.shape[-1], "global_batch": len(images) * world_size,
                    "images_per_s": rate,
                })
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}",
                            img_s=f"{rate:.0f}", res=f"{images.shape[-2]}x{images.shape[-1]}", refresh=False)
            if config.save_every_steps and step % config.save_every_steps == 0:
                if is_main:
                    _save_checkpoint(out / CHECKPOINT, config, model, ema, optimizer, scheduler, scaler, sampler,
                                     {**state, "epoch": epoch, "step": step}, steps_done=batches_done)
                saved_step = step
            if config.max_steps and step >= config.max_steps:
                stop = True  # the partial epoch is evaluated and counts as done
                break
        bar.close()
        metrics, val_failed = task.evaluate(model, val_loader, device, config, distributed)
        ema_value = task.evaluate(ema.module, val_loader, device, config, distributed)[0][metric] \
            if ema is not None else None
        value = metrics[metric]
        seconds = time.perf_counter() - start
        train_failed = _sum_over_ranks(failed_images, device) if distributed else failed_images
        row = {"epoch": epoch, "step": step, "train_loss": epoch_loss / max(1, epoch_images),
               "lr": scheduler.get_last_lr()[0], **{f"val_{k}": v for k, v in metrics.items()},
               f"ema_{metric}": ema_value,
               "images_per_s": epoch_images * world_size / max(1e-9, time.perf_counter() - epoch_start),
               "seconds": seconds, "failed_images": train_failed, "val_failed_images": val_failed}
        state["history"].append(row)
        best_candidate = max(value, ema_value if ema_value is not None else -1.0)
        improved = best_candidate > state["best_metric"]
        if improved:  # the metrics are summed over ranks: all ranks agree
            state["best_metric"], state["best_epoch"] = best_candidate, epoch
        if is_main:
            if improved:
                source = ema.module if ema is not None and (ema_value or -1) > value else model
                _export_best(source, model, out / BEST)
            _append_csv(csv_path, row)
            if board is not None:
                for key, number in metrics.items():
                    board.add_scalar(f"val/{key}", number, step)
                if ema_value is not None:
                    board.add_scalar(f"val/ema_{metric}", ema_value, step)
                board.flush()
            _save_checkpoint(out / CHECKPOINT, config, model, ema, optimizer, scheduler, scaler, sampler,
                             {**state, "epoch": epoch + 1, "step": step}, steps_done=0)
            unit = task.metric_scale
            ema_text = (f", EMA {ema_value:.2f}{unit}" if unit else f", EMA {ema_value:.4f}") \
                if ema_value is not None else ""
            skipped = f", skipped undecodable images: {train_failed} train, {val_failed} val" \
                if train_failed or val_failed else ""
            print(f"epoch {epoch}: loss {row['train_loss']:.4f}, {task.format_metrics(metrics)}{ema_text}, "
                  f"{row['images_per_s']:.0f} img/s, {seconds:.0f} s{skipped}", flush=True)
        state["epoch"], state["step"] = epoch + 1, step
        saved_step = step  # rank 0 wrote last.pt above
        if stop:
            break
    if board is not None:
        board.close()
    if is_main:
        _plot(csv_path, out / "curves.png", metric, task.metric_scale)
    if distributed:
        dist.barrier()
    return TrainResult(state["best_metric"], state["best_epoch"], str(out / BEST), len(state["history"]), step,
                       time.perf_counter() - start, state["history"], metric)


def _progress(total: int, epoch: int, enabled: bool):
    from tqdm.auto import tqdm

    # disable=None: no bar when stderr is not a terminal (logs stay readable)
    return tqdm(total=total, desc=f"epoch {epoch}", unit="step", disable=None if enabled else True, leave=False)


def _device(name: str, distributed: bool) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError("device cuda asked for but no CUDA device is visible; set device: cpu")
        if distributed:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
    return device


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _make_ema(model: nn.Module, decay: Optional[float]):
    """EMA of weights and BatchNorm statistics. The decay warms up as
    ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so that a short run's EMA is
    not dominated by the random initialisation."""
    if decay is None:
        return None
    from torch.optim.swa_utils import AveragedModel

    def average(averaged: torch.Tensor, current: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        if not averaged.is_floating_point():
            return current  # num_batches_tracked
        n = float(updates)
        rate = min(decay, (1.0 + n) / (10.0 + n))
        return averaged * rate + current * (1.0 - rate)

    return AveragedModel(model, avg_fn=average, use_buffers=True)


def _sum_over_ranks(values, device: torch.device):
    """All-reduce (sum) an int or a list of ints over the process group."""
    tensor = torch.tensor(values if isinstance(values, list) else [values], dtype=torch.int64, device=device)
    dist.all_reduce(tensor)
    totals = [int(v) for v in tensor.tolist()]
    return totals if isinstance(values, list) else totals[0]


def _export_best(source: nn.Module, model: nn.Module, path: Path) -> None:
    from ..weights.loading import save_weights

    # the EMA copy lacks the attributes create_model set; give them over
    for name in ("model_name", "num_classes", "preprocess", "class_names"):
        if hasattr(model, name):
            setattr(source, name, getattr(model, name))
    save_weights(source, path)


def _save_checkpoint(path: Path, config, model, ema, optimizer, scheduler, scaler, sampler, state, steps_done: int):
    checkpoint = {
        "format": "mobilevt-train",
        "model_name": model.model_name,
        "config": config.to_dict(),
        "model": model.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        # at an epoch end the next epoch starts from its first step
        "sampler": {**sampler.state_dict(steps_done), "epoch": int(state["epoch"])},
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": _numpy_state(),
            "python": list(random.getstate()[1]),
            "python_version": random.getstate()[0],
            "python_gauss": random.getstate()[2],
        },
        "task": config.task,
        "state": {k: state[k] for k in ("epoch", "step", "best_metric", "best_epoch")},
        "history": json.dumps(state["history"]),
    }
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def _numpy_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _claim_output_folder(out: Path, overwrite: bool, is_main: bool) -> None:
    """Refuse to train into an earlier run's folder (its best weights would be replaced
    silently), or, with ``overwrite``, delete that run's files first."""
    found = [name for name in RUN_FILES if (out / name).exists()]
    if not found:
        return
    if not overwrite:
        raise TrainingError(
            f"{out} already holds a training run ({', '.join(found)}): pass --resume to continue it, "
            f"--overwrite to replace it, or output_dir=<new folder> to keep it"
        )
    if is_main:
        for name in found:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # no rank starts before the old files are gone


def checkpoint_position(path: Path) -> Optional[tuple[int, int]]:
    """(epoch, step) of a training checkpoint, or None where there is none or it is unreadable
    (it is read while reporting an interruption: that report must not fail)."""
    if not path.is_file():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        return int(checkpoint["sampler"]["epoch"]), int(checkpoint["state"]["step"])
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, pickle.UnpicklingError):
        return None


def _load_checkpoint(path: Path, config, model, ema, optimizer, scheduler, scaler, sampler) -> dict:
    if not path.is_file():
        raise TrainingError(f"nothing to resume: {path} does not exist (run without --resume to start)")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if checkpoint.get("format") != "mobilevt-train":
        raise TrainingError(f"{path} is not a mobilevt training checkpoint")
    if checkpoint["model_name"] != model.model_name:
        raise TrainingError(
            f"{path} was written by a {checkpoint['model_name']} run; this config trains {model.model_name}"
        )
    missing, unexpected = model.load_state_dict(checkpoint["model"], strict=False)
    if missing or unexpected:
        raise TrainingError(f"{path} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if ema is not None and checkpoint["ema"] is not None:
        ema.load_state_dict(checkpoint["ema"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    scaler.load_state_dict(checkpoint["scaler"])
    sampler.load_state_dict(checkpoint["sampler"])
    rng = checkpoint["rng"]
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    numpy_state = rng["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached"]))
    random.setstate((rng["python_version"], tuple(rng["python"]), rng["python_gauss"]))
    state = dict(checkpoint["state"])
    if "best_top1" in state:  # written before training became task-generic
        state["best_metric"] = state.pop("best_top1")
    state["epoch"] = int(checkpoint["sampler"]["epoch"])
    state["history"] = json.loads(checkpoint["history"])
    return state


def _truncate_csv(path: Path, column: str, last: int) -> None:
    if not path.exists():
        return
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    kept = [r for r in rows if int(r[column]) <= last]
    if len(kept) == len(rows):
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.info("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _plot(csv_path: Path, png_path: Path, metric: str = "top1", unit: str = "%") -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed: no curves.png (pip install matplotlib)")
        return
    if not csv_path.exists():
        return
    with open(csv_path) as handle:
        rows = list(csv.DictReader(handle))
    epochs = [int(r["epoch"]) for r in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [float(r["train_loss"]) for r in rows])
    left.set(xlabel="epoch", ylabel="train loss")
    right.plot(epochs, [float(r[f"val_{metric}"]) for r in rows], label="model")
    if rows and rows[0][f"ema_{metric}"] not in ("", "None"):
        right.plot(epochs, [float(r[f"ema_{metric}"]) for r in rows], label="EMA")
    right.set(xlabel="epoch", ylabel=f"val {metric}" + (f" ({unit})" if unit else ""))
    right.legend()
    figure.tight_layout()
    with atomic_path(png_path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
