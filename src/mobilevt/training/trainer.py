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
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.sampler import MultiScaleBatchSampler, MultiScaleDataset, Resolution, multiscale_resolutions
from ..engine import save_weights
from ..fileio import atomic_path, disk_full_as_error
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
    run = _start_run(config, resume, overwrite)
    val_loader = run.task.validation_loader(run.val_set, config, run.rank, run.world_size)
    for epoch in range(run.state["epoch"], config.epochs):
        epoch_stats = _train_epoch(run, epoch)
        _end_epoch(run, epoch, epoch_stats, val_loader)
        if epoch_stats.stopped or _reached_stop_metric(run):
            break
    if run.board is not None:
        run.board.close()
    if run.is_main:
        _plot(run.out / "metrics.csv", run.out / "curves.png", run.task.primary_metric, run.task.metric_scale)
    if run.distributed:
        dist.barrier()
    return TrainResult(
        run.state["best_metric"],
        run.state["best_epoch"],
        str(run.out / BEST),
        len(run.state["history"]),
        run.step,
        time.perf_counter() - run.start,
        run.state["history"],
        run.task.primary_metric,
    )


@dataclass
class _Run:
    """What a training run holds from its start to its end (one per process)."""

    config: TrainConfig
    task: TrainingTask
    device: torch.device
    rank: int
    world_size: int
    out: Path
    val_set: Any
    model: nn.Module
    wrapped: nn.Module  # the model, or its DistributedDataParallel wrapper
    ema: Any
    sampler: MultiScaleBatchSampler
    train_data: MultiScaleDataset
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None  # autocast's dtype on CUDA, None in float32
    state: dict
    board: Any
    start: float
    step: int = 0
    saved_step: int | None = None  # the step of this run's newest last.pt

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class _EpochStats:
    loss_sum: float = 0.0  # the training loss summed over images
    images: int = 0
    failed_images: int = 0  # undecodable training images met (skipped)
    seconds: float = 0.0
    stopped: bool = False  # max_steps reached within the epoch


def _start_run(config: TrainConfig, resume: bool, overwrite: bool) -> _Run:
    task: TrainingTask = get_task(config.task)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = _device(config.device, distributed)
    if distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if distributed else 0
    world_size = dist.get_world_size() if distributed else 1
    out = Path(config.output_dir)
    if not resume:
        _claim_output_folder(out, overwrite, rank == 0)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    _seed_everything(config.seed)

    if rank == 0:  # the data and the model take seconds to build: say so first
        print(f"{config.task}: loading {config.data.dataset} and building {config.model} ...", flush=True)
    train_set, val_set, classes = task.build_datasets(config)
    model = task.create_model(config, list(classes))
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = _make_ema(model, config.ema_decay)
    wrapped: nn.Module = model
    if distributed:
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    sampler = MultiScaleBatchSampler(
        len(train_set), _resolutions(config), seed=config.seed, rank=rank, world_size=world_size
    )
    train_data = MultiScaleDataset(
        train_set, functools.partial(task.train_transform, config=config), seed=config.seed, joint=True
    )
    optimizer, scheduler = _optimizer_and_schedule(model, config, len(sampler))
    amp_dtype, scaler = _mixed_precision(config, device, rank == 0)
    state = {"epoch": 0, "step": 0, "best_metric": -1.0, "best_epoch": -1, "history": []}
    if resume:
        state = _load_checkpoint(out / CHECKPOINT, config, model, ema, optimizer, scheduler, scaler, sampler)
        if rank == 0:  # drop log rows written after the checkpoint by the interrupted run
            print(f"resuming {out / CHECKPOINT}: epoch {state['epoch']}, step {state['step']}", flush=True)
            _truncate_csv(out / "steps.csv", "step", state["step"])
            _truncate_csv(out / "metrics.csv", "epoch", state["epoch"] - 1)
    if rank == 0:
        print(_plan(config, len(train_set), len(val_set), sampler, device, world_size, out), flush=True)
    board = _tensorboard(out) if rank == 0 else None
    return _Run(
        config,
        task,
        device,
        rank,
        world_size,
        out,
        val_set,
        model,
        wrapped,
        ema,
        sampler,
        train_data,
        optimizer,
        scheduler,
        scaler,
        amp_dtype,
        state,
        board,
        time.perf_counter(),
        state["step"],
        state["step"] if resume else None,
    )


def _plan(config: TrainConfig, train_images: int, val_images: int, sampler, device, world_size: int, out) -> str:
    """One line before the first epoch: the data, the model, the sampler's shapes, where it goes."""
    shapes = ", ".join(f"{r.height}x{r.width}:{r.batch_size}" for r in _resolutions(config))
    return (
        f"training {config.model} on {train_images} images ({val_images} for validation), {config.epochs} epochs "
        f"of {len(sampler)} batches on {device} x{world_size}; {config.sampler.name} sampler, size:batch {shapes}; "
        f"writing {out}"
    )


def _resolutions(config: TrainConfig) -> list:
    sampler = config.sampler
    if sampler.name == "multiscale":
        return multiscale_resolutions(
            (sampler.image_size,) * 2,
            config.batch_size,
            (sampler.min_size,) * 2,
            (sampler.max_size,) * 2,
            sampler.num_scales,
            sampler.divisor,
        )
    return [Resolution(sampler.image_size, sampler.image_size, config.batch_size)]


def _optimizer_and_schedule(model: nn.Module, config: TrainConfig, batches_per_epoch: int):
    """AdamW and its warmup + cosine schedule. Multi-scale epochs differ slightly in step
    count: the schedule's length is epoch 0's (it holds at min_lr if a run goes beyond)."""
    optim = config.optim
    total_steps = math.ceil(batches_per_epoch / optim.accumulation_steps) * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, optim.weight_decay), lr=optim.lr, betas=tuple(optim.betas), fused=True
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, total_steps, optim.warmup_steps, optim.lr, optim.min_lr) / optim.lr
    )
    return optimizer, scheduler


def _mixed_precision(config: TrainConfig, device: torch.device, is_main: bool):
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
    use_amp = amp_dtype is not None and device.type == "cuda"
    if amp_dtype is not None and not use_amp and is_main:
        logger.warning("amp=%s applies on CUDA only; training in float32 on %s", config.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    return (amp_dtype if use_amp else None), scaler


def _train_epoch(run: _Run, epoch: int) -> _EpochStats:
    config, task = run.config, run.task
    run.sampler.set_epoch(epoch)  # keeps a resumed mid-epoch position for the same epoch
    run.train_data.epoch = epoch
    loader = DataLoader(
        run.train_data,
        batch_sampler=run.sampler,
        num_workers=config.data.workers,
        collate_fn=task.collate,
        pin_memory=run.device.type == "cuda",
        generator=torch.Generator().manual_seed(config.seed),
    )
    run.wrapped.train()
    stats, epoch_start, micro = _EpochStats(), time.perf_counter(), 0
    # batches consumed so far in this epoch: the DataLoader prefetches ahead of the
    # training step, so the sampler's own position is not where to resume
    batches_done = run.sampler.start_step
    bar = _progress(len(run.sampler), epoch, run.is_main)
    bar.update(batches_done)
    for images, targets, failed in loader:
        stats.failed_images += failed
        batches_done += 1
        bar.update(1)
        if images is None:
            continue
        images = images.to(run.device, non_blocking=True)
        targets = task.targets_to(targets, run.device)
        if config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        images, targets = task.prepare_batch(images, targets)
        autocast = torch.autocast("cuda", dtype=run.amp_dtype) if run.amp_dtype else contextlib.nullcontext()
        with autocast:
            loss = task.training_loss(run.wrapped, images, targets, config)
        _check_finite(run, loss, epoch)
        run.scaler.scale(loss / config.optim.accumulation_steps).backward()
        micro += 1
        stats.loss_sum += loss.item() * len(images)
        stats.images += len(images)
        if micro % config.optim.accumulation_steps:
            continue
        _optimizer_step(run)
        rate = stats.images * run.world_size / max(1e-9, time.perf_counter() - epoch_start)
        _log_step(run, epoch, loss, images, rate)
        bar.set_postfix(
            loss=f"{loss.item():.3f}",
            lr=f"{run.scheduler.get_last_lr()[0]:.2e}",
            img_s=f"{rate:.0f}",
            res=f"{images.shape[-2]}x{images.shape[-1]}",
            refresh=False,
        )
        if config.save_every_steps and run.step % config.save_every_steps == 0:
            if run.is_main:
                _save_checkpoint(run, epoch, steps_done=batches_done)
            run.saved_step = run.step
        if config.max_steps and run.step >= config.max_steps:
            stats.stopped = True  # the partial epoch is evaluated and counts as done
            break
    bar.close()
    stats.seconds = time.perf_counter() - epoch_start
    return stats


def _check_finite(run: _Run, loss: torch.Tensor, epoch: int) -> None:
    finite = torch.isfinite(loss.detach()).to(torch.int64).reshape(1)
    if run.distributed:  # every rank stops together instead of waiting for a rank that stopped
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    if not bool(finite):
        kept = (
            f"the last good checkpoint is {run.out / CHECKPOINT} (step {run.saved_step})"
            if run.saved_step is not None
            else "no checkpoint was written yet in this run"
        )
        raise TrainingError(
            f"loss is {loss.item()} at step {run.step} (epoch {epoch}) on rank {run.rank}; {kept}. "
            "Lower optim.lr, raise optim.warmup_steps or set optim.clip_grad_norm"
        )


def _optimizer_step(run: _Run) -> None:
    if run.config.optim.clip_grad_norm:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), run.config.optim.clip_grad_norm)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    if run.ema is not None:
        run.ema.update_parameters(run.model)
    run.step += 1


def _log_step(run: _Run, epoch: int, loss: torch.Tensor, images: torch.Tensor, rate: float) -> None:
    step_loss = loss.detach().float()
    if run.distributed:  # the loss of the global batch, as one process would see it
        dist.all_reduce(step_loss)
        step_loss /= run.world_size
    lr = run.scheduler.get_last_lr()[0]
    if run.board is not None:
        run.board.add_scalar("train/loss", step_loss.item(), run.step)
        run.board.add_scalar("train/lr", lr, run.step)
        run.board.add_scalar("train/images_per_s", rate, run.step)
    if run.is_main:
        _append_csv(
            run.out / "steps.csv",
            {
                "step": run.step,
                "epoch": epoch,
                "loss": step_loss.item(),
                "lr": lr,
                "height": images.shape[-2],
                "width": images.shape[-1],
                "global_batch": len(images) * run.world_size,
                "images_per_s": rate,
            },
        )


def _end_epoch(run: _Run, epoch: int, stats: _EpochStats, val_loader) -> None:
    """Validate the model and its EMA, keep the best, write the logs and last.pt."""
    task, metric, state = run.task, run.task.primary_metric, run.state
    metrics, val_failed = task.evaluate(run.model, val_loader, run.device, run.config, run.distributed)
    ema_value = (
        task.evaluate(run.ema.module, val_loader, run.device, run.config, run.distributed)[0][metric]
        if run.ema is not None
        else None
    )
    value = metrics[metric]
    train_failed = _sum_over_ranks(stats.failed_images, run.device) if run.distributed else stats.failed_images
    row = {
        "epoch": epoch,
        "step": run.step,
        "train_loss": stats.loss_sum / max(1, stats.images),
        "lr": run.scheduler.get_last_lr()[0],
        **{f"val_{k}": v for k, v in metrics.items()},
        f"ema_{metric}": ema_value,
        "images_per_s": stats.images * run.world_size / max(1e-9, stats.seconds),
        "seconds": time.perf_counter() - run.start,
        "failed_images": train_failed,
        "val_failed_images": val_failed,
    }
    state["history"].append(row)
    best_candidate = max(value, ema_value if ema_value is not None else -1.0)
    improved = best_candidate > state["best_metric"]
    if improved:  # the metrics are summed over ranks: all ranks agree
        state["best_metric"], state["best_epoch"] = best_candidate, epoch
    if run.is_main:
        if improved:
            source = run.ema.module if run.ema is not None and (ema_value or -1) > value else run.model
            _export_best(source, run.model, run.out / BEST)
        _append_csv(run.out / "metrics.csv", row)
        _board_epoch(run.board, metrics, ema_value, metric, run.step)
        _save_checkpoint(run, epoch + 1, steps_done=0)
        _print_epoch(task, epoch, row, metrics, ema_value, train_failed, val_failed)
    state["epoch"], state["step"] = epoch + 1, run.step
    run.saved_step = run.step  # rank 0 wrote last.pt above


def _reached_stop_metric(run: _Run) -> bool:
    """Whether the best validation metric so far reached ``stop_at_metric`` (every rank sees
    the same metrics, summed over ranks, so all stop together)."""
    target = run.config.stop_at_metric
    if target is None or run.state["best_metric"] < target:
        return False
    if run.is_main and run.state["epoch"] < run.config.epochs:
        print(
            f"stopping after epoch {run.state['epoch'] - 1}: best val {run.task.primary_metric} "
            f"{run.state['best_metric']:.4f} reached stop_at_metric {target:g}"
        )
    return True


def _board_epoch(board, metrics: dict, ema_value: float | None, metric: str, step: int) -> None:
    if board is None:
        return
    for key, number in metrics.items():
        board.add_scalar(f"val/{key}", number, step)
    if ema_value is not None:
        board.add_scalar(f"val/ema_{metric}", ema_value, step)
    board.flush()


def _print_epoch(
    task: TrainingTask,
    epoch: int,
    row: dict,
    metrics: dict,
    ema_value: float | None,
    train_failed: int,
    val_failed: int,
) -> None:
    unit = task.metric_scale
    ema_text = (f", EMA {ema_value:.2f}{unit}" if unit else f", EMA {ema_value:.4f}") if ema_value is not None else ""
    skipped = (
        f", skipped undecodable images: {train_failed} train, {val_failed} val" if train_failed or val_failed else ""
    )
    print(
        f"epoch {epoch}: loss {row['train_loss']:.4f}, {task.format_metrics(metrics)}{ema_text}, "
        f"{row['images_per_s']:.0f} img/s, {row['seconds']:.0f} s{skipped}",
        flush=True,
    )


def _progress(total: int, epoch: int, enabled: bool):

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


def _make_ema(model: nn.Module, decay: float | None):
    """EMA of weights and BatchNorm statistics. The decay warms up as
    ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so that a short run's EMA is
    not dominated by the random initialisation."""
    if decay is None:
        return None

    def average(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        # one call per dtype group: a foreach lerp instead of two temporaries per tensor
        if not averaged[0].is_floating_point():
            torch._foreach_copy_(averaged, current)  # num_batches_tracked
            return
        n = float(updates)
        rate = min(decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(averaged, current, 1.0 - rate)

    return AveragedModel(model, multi_avg_fn=average, use_buffers=True)


def _sum_over_ranks(values, device: torch.device):
    """All-reduce (sum) an int or a list of ints over the process group."""
    tensor = torch.tensor(values if isinstance(values, list) else [values], dtype=torch.int64, device=device)
    dist.all_reduce(tensor)
    totals = [int(v) for v in tensor.tolist()]
    return totals if isinstance(values, list) else totals[0]


def _export_best(source: nn.Module, model: nn.Module, path: Path) -> None:

    # the EMA copy lacks the attributes create_model set; give them over
    for name in ("model_name", "num_classes", "preprocess", "class_names"):
        if hasattr(model, name):
            setattr(source, name, getattr(model, name))
    save_weights(source, path)


def _save_checkpoint(run: _Run, epoch: int, steps_done: int) -> None:
    """``last.pt``: everything a resumed run needs to go on from ``steps_done`` batches into
    ``epoch`` (at an epoch end ``epoch`` is the next one and ``steps_done`` 0)."""
    config, model, ema, state = run.config, run.model, run.ema, run.state | {"epoch": epoch, "step": run.step}
    checkpoint = {
        "format": "mobilevt-train",
        "model_name": model.model_name,
        "config": config.to_dict(),
        "model": model.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "sampler": {**run.sampler.state_dict(steps_done), "epoch": epoch},
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
    with atomic_path(run.out / CHECKPOINT) as tmp:
        torch.save(checkpoint, tmp)


def _numpy_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "kind": kind,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


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


def checkpoint_position(path: Path) -> tuple[int, int] | None:
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
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached"],
        )
    )
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
    with disk_full_as_error(path), open(path, "a", newline="") as handle:
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
