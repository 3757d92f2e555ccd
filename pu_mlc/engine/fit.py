"""``fit(config)``: the PU-MLC recipe (SPEC §4), one function for every launcher.

Adam (weight decay on every trainable tensor), OneCycle over ``epochs`` (80) stepped per
iteration and cut after epoch ``Stop_epoch``, EMA of the whole model state after every optimizer
step, autocast, both the regular and the EMA model scored every epoch, best checkpoint kept,
``last.pt`` written every epoch so a killed run resumes at the next epoch. The same function runs
alone, under ``torchrun`` and inside a Ray Train worker; the only difference is the ``reporter``
callback, called on every rank after every epoch with the epoch's metrics (Ray Train's
``report`` is a barrier, so every rank must call it).
"""

from __future__ import annotations

import logging
import math
import platform
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from .. import __version__
from ..config import TrainConfig
from ..losses import build_loss
from ..models import build_model
from .checkpoint import load_checkpoint, save_checkpoint, save_best_weights
from .data_setup import RunData, build_loaders, prepare_run_data, resolve_pipeline
from .ema import TrainableStateEma
from .prefetch import DevicePrefetcher
from .distributed import DistContext, setup_distributed, teardown_distributed
from .evaluate import EvalTarget, predict, summarise
from .outputs import (RunPaths, check_output_dir, prepare_output_dir, read_json,
                      write_json_atomic, write_text_atomic)
from .precision import Precision, resolve_precision
from .progress import progress
from .selection import Selection
from .step import compute_loss, optimizer_step
from .tensorboard import RunWriter

log = logging.getLogger(__name__)

#: ``reporter(metrics, last_checkpoint_file_or_None)``; called on every rank every epoch.
Reporter = Callable[[dict, Optional[Path]], None]


def fit(cfg: TrainConfig, *, reporter: Optional[Reporter] = None,
        device: Optional[torch.device] = None, resume_checkpoint: Optional[Path] = None,
        hparams: Optional[dict] = None) -> dict:
    """Train one configuration; return the final result (also written to ``metrics.json``).

    ``resume_checkpoint`` is given by launchers that manage the output directory themselves
    (Ray Train restores a trial from its own checkpoint); ``cfg.resume`` resumes from
    ``OUTPUT_DIR/checkpoints/last.pt``. ``hparams`` names the searched fields shown in the
    TensorBoard HParams tab (default: the whole config).
    """
    cfg = cfg.validate()
    ctx = setup_distributed(cfg.device, device)
    log_handler = None
    try:
        paths = (RunPaths(Path(cfg.output_dir).resolve()) if resume_checkpoint is not None
                 else check_output_dir(cfg))
        if resume_checkpoint is None and cfg.resume:
            resume_checkpoint = paths.last_checkpoint
        precision = resolve_precision(cfg.precision, ctx.device)
        t0 = time.perf_counter()
        data = prepare_run_data(cfg, ctx)
        setup_seconds = time.perf_counter() - t0
        # The model is built (and --pretrainedModel read) before anything is written, so a bad
        # weight file or model name leaves the output dir untouched, like every other bad input.
        t_build = time.perf_counter()
        model = _build_model(cfg, data)
        build_seconds = time.perf_counter() - t_build
        ctx.barrier()                       # every rank checked everything before rank 0 writes
        if ctx.is_main:
            prepare_output_dir(paths, cfg)
            write_text_atomic(paths.config, cfg.to_yaml())
            log_handler = _attach_log_file(paths.log_file)
        ctx.barrier()
        return _train(cfg, ctx, paths, data, model, precision, reporter, resume_checkpoint,
                      hparams, setup_seconds=setup_seconds, build_seconds=build_seconds)
    finally:
        if log_handler is not None:
            logging.getLogger().removeHandler(log_handler)
            log_handler.close()
        teardown_distributed(ctx)


def _build_model(cfg: TrainConfig, data: RunData) -> nn.Module:
    torch.manual_seed(cfg.seed)            # same initial weights on every rank
    return build_model(cfg.model_name, data.num_classes, head=cfg.head,
                       word_vectors=data.word_vectors, adjacency=data.adjacency,
                       pretrained=cfg.pretrained_model, lgc=cfg.lgc, lgc_impl=cfg.lgc_impl,
                       head_dim=cfg.head_dim)


def _train(cfg: TrainConfig, ctx: DistContext, paths: RunPaths, data: RunData,
           model: nn.Module, precision: Precision, reporter: Optional[Reporter],
           resume_checkpoint: Optional[Path], hparams: Optional[dict],
           setup_seconds: float, build_seconds: float) -> dict:
    t_build = time.perf_counter()
    model.to(ctx.device)
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True          # fixed input sizes: pick fastest kernels
    if ctx.device.type == "cuda" and cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    trainable = model.trainable_parameters()
    loaders = build_loaders(cfg, data, ctx, model.input_mean, model.input_std)
    steps_per_epoch = len(loaders.train)
    optimizer = torch.optim.Adam(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 **({"fused": True} if ctx.device.type == "cuda" else {}))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch,
        pct_start=cfg.pct_start)
    ema = TrainableStateEma(model, decay=cfg.ema)
    scaler = precision.grad_scaler()
    criterion = build_loss(cfg.loss, alpha=cfg.alpha, gamma=cfg.gamma)
    net: nn.Module = model
    if ctx.distributed:
        net = DDP(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                  **_no_buffer_sync())
    if cfg.compile:
        net = torch.compile(net)
    # MixUp draws on a CPU generator: no device->host sync per step to read them.
    generator = torch.Generator()

    selection = Selection(cfg.protocol)
    history: list[dict] = []
    start_epoch = 0
    if resume_checkpoint is not None:
        state = load_checkpoint(resume_checkpoint, ctx.device)
        model.load_state_dict(state["model"])
        ema.module.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        selection = Selection.from_state(state["selection"])
        history = _restore_history(state["history"], read_json(paths.metrics))
        start_epoch = state["epoch"] + 1
        log.info("resumed from %s at epoch %d", resume_checkpoint, start_epoch)

    writer = RunWriter(paths.tensorboard(cfg), enabled=ctx.is_main,
                       purge_step=start_epoch + 1 if start_epoch else None)
    writer.hparams_start(hparams if hparams is not None else cfg.to_dict(),
                         resumed=start_epoch > 0)

    eval_targets = _eval_targets(data, loaders)
    build_seconds += time.perf_counter() - t_build
    if ctx.is_main:
        log.info("data: %s", data.summary())
        log.info("model: %s on %s, %s, %d trainable tensors, %d steps/epoch x %d process(es)",
                 cfg.model_name, ctx.device, precision.name, len(trainable), steps_per_epoch,
                 ctx.world_size)
        if model.load_report is not None:      # built before train.log existed: repeat it there
            log.info("pretrained weights %s", model.load_report.summary())

    status = "stopped"
    for epoch in range(start_epoch, cfg.stop_epoch + 1):
        loaders.train_sampler.set_epoch(epoch)
        # MixUp draws depend on (seed, rank, epoch) only, so a resumed run repeats them exactly.
        generator.manual_seed(_mix_seed(cfg.seed, ctx.rank, epoch))
        train_stats = _train_one_epoch(net, model, ema, loaders, criterion, optimizer,
                                       scheduler, scaler, precision, generator, cfg, ctx, epoch)
        t_eval = time.perf_counter()
        record = {"epoch": epoch + 1, **train_stats}
        if epoch == start_epoch and start_epoch > 0:
            record["resumed_from_checkpoint"] = True
        improved = _evaluate_epoch(record, selection, model, ema.module, eval_targets, ctx,
                                   precision, loaders, epoch)
        record["eval_seconds"] = time.perf_counter() - t_eval
        record.update(score=record["score"], best_score=selection.best_score,
                      best_epoch=selection.best_epoch + 1)
        if selection.test_map is not None:
            record["selected_test_mAP"] = selection.test_map
        history.append(record)

        t_ckpt = time.perf_counter()
        last_file: Optional[Path] = None
        if ctx.is_main:
            if improved:
                chosen = ema.module if selection.best_model == "ema" else model
                save_best_weights(paths.best_checkpoint, chosen, cfg, data.class_names,
                                  epoch, selection)
            save_checkpoint(paths.last_checkpoint, model=model, ema=ema.module,
                            optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                            epoch=epoch, selection=selection, history=history)
            last_file = paths.last_checkpoint
            record["checkpoint_seconds"] = time.perf_counter() - t_ckpt
            writer.scalars(_tensorboard_scalars(record, cfg.protocol), step=epoch + 1)
            write_json_atomic(paths.metrics, _metrics_payload(
                cfg, data, ctx, precision, selection, history, "running", setup_seconds,
                build_seconds))
            log.info(_epoch_line(record, cfg))
        if reporter is not None:
            reporter(dict(record), last_file)
        ctx.barrier()
        status = "finished"

    result = _metrics_payload(cfg, data, ctx, precision, selection, history, status,
                              setup_seconds, build_seconds)
    if ctx.is_main:
        write_json_atomic(paths.metrics, result)
        writer.hparams_end()
        log.info("done: %s", _final_line(result))
    writer.close()
    return result


# ------------------------------------------------------------------------------------------------
def _train_one_epoch(net, model, ema, loaders, criterion, optimizer, scheduler, scaler,
                     precision, generator, cfg: TrainConfig, ctx: DistContext,
                     epoch: int) -> dict:
    net.train()                             # the model keeps every BatchNorm in eval mode
    total = torch.zeros((), dtype=torch.float64, device=ctx.device)
    steps = 0
    wait = 0.0
    t_start = time.perf_counter()
    t_fetch = time.perf_counter()
    def to_device(batch) -> tuple[torch.Tensor, torch.Tensor]:
        x = loaders.to_input(batch, ctx.device, train=True)
        if x.device.type == "cuda" and cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, batch[1].to(ctx.device, non_blocking=True)

    if loaders.device_transform_train is not None:    # decode/augment on the device, ahead
        batches = DevicePrefetcher(loaders.train, to_device, ctx.device)
    else:
        batches = (to_device(b) for b in loaders.train)
    bar = progress(batches, total=len(loaders.train), enabled=ctx.is_main,
                   desc=f"epoch {epoch}/{cfg.stop_epoch}")
    for x, targets in bar:
        wait += time.perf_counter() - t_fetch
        loss, _ = compute_loss(net, x, targets, criterion, precision,
                               mixup_alpha=cfg.mixup_alpha, generator=generator, fused=True)
        optimizer_step(loss, optimizer, scaler)
        scheduler.step()
        ema.update(model)
        total += loss.detach()
        steps += 1
        if steps % 50 == 0 or steps == len(loaders.train):
            value = float(total.item()) / steps
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"training loss became {value} at epoch {epoch} step {steps}; lower --lr or "
                    f"use --precision fp32/bf16")
            bar.set_postfix(loss=f"{value:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        t_fetch = time.perf_counter()
    bar.close()
    seconds = time.perf_counter() - t_start
    mean_loss = ctx.all_reduce_mean(float(total.item()) / max(steps, 1))
    return {"train_loss": mean_loss, "lr": scheduler.get_last_lr()[0],
            "train_seconds": seconds, "data_wait_seconds": wait, "steps": steps,
            "images_per_second": steps * cfg.batch_size * ctx.world_size / max(seconds, 1e-9)}


def _eval_targets(data: RunData, loaders) -> dict[str, EvalTarget]:
    targets = {"test": EvalTarget("test", loaders.test, data.test.targets == 1, None,
                                  data.class_names)}
    if data.val is not None:
        t = data.val.targets
        targets["val"] = EvalTarget("val", loaders.val, t == 1, t != 0, data.class_names)
    return targets


def _evaluate_epoch(record: dict, selection: Selection, model, ema_model, targets, ctx,
                    precision, loaders, epoch: int) -> bool:
    """Score the models, update the selection; return whether this epoch is the new best."""
    to_input = lambda b: loaders.to_input(b, ctx.device, train=False)  # noqa: E731
    models = {"regular": model, "ema": ema_model}
    if selection.protocol == "paper":
        scores = predict(models, targets["test"], ctx, precision, to_input)
        summaries = {k: summarise(v, targets["test"]) for k, v in scores.items()}
        record["mAP"], record["mAP_ema"] = summaries["regular"]["mAP"], summaries["ema"]["mAP"]
        improved = selection.consider(epoch, {k: s["mAP"] for k, s in summaries.items()})
        best = summaries[max(summaries, key=lambda k: summaries[k]["mAP"])]
        record.update(OF1=best["OF1"], CF1=best["CF1"])
        if improved:
            selection.test_map = selection.best_score
            selection.test_summary = summaries[selection.best_model]
    else:
        scores = predict(models, targets["val"], ctx, precision, to_input)
        summaries = {k: summarise(v, targets["val"]) for k, v in scores.items()}
        record["val_mAP"] = summaries["regular"]["mAP"]
        record["val_mAP_ema"] = summaries["ema"]["mAP"]
        improved = selection.consider(epoch, {k: s["mAP"] for k, s in summaries.items()})
        if improved:
            chosen = {selection.best_model: models[selection.best_model]}
            test_scores = predict(chosen, targets["test"], ctx, precision, to_input)
            summary = summarise(test_scores[selection.best_model], targets["test"])
            selection.test_map, selection.test_summary = summary["mAP"], summary
    record["score"] = max(s["mAP"] for s in summaries.values())
    return improved


def _tensorboard_scalars(record: dict, protocol: str) -> dict:
    out = {"train/loss": record["train_loss"], "train/lr": record["lr"],
           "train/images_per_second": record["images_per_second"],
           "time/train_seconds": record["train_seconds"],
           "time/eval_seconds": record["eval_seconds"]}
    if protocol == "paper":
        out.update({"test/mAP": record["mAP"], "test/mAP_ema": record["mAP_ema"],
                    "test/OF1": record.get("OF1"), "test/CF1": record.get("CF1")})
    else:
        out.update({"val/mAP": record["val_mAP"], "val/mAP_ema": record["val_mAP_ema"]})
    out["selected/test_mAP"] = record.get("selected_test_mAP")
    return out


def _metrics_payload(cfg, data: RunData, ctx, precision, selection: Selection, history,
                     status, setup_seconds, build_seconds) -> dict:
    train_s = sum(h["train_seconds"] for h in history)
    eval_s = sum(h["eval_seconds"] for h in history)
    return {
        "status": status,
        "protocol": cfg.protocol,
        "result": {
            "test_mAP": selection.test_map,
            "selected_epoch": selection.best_epoch + 1 if selection.best_epoch >= 0 else None,
            "selected_model": selection.best_model or None,
            "selection_metric": ("test mAP (paper protocol: optimistic)" if cfg.protocol ==
                                 "paper" else "validation mAP (honest protocol)"),
            "selection_score": selection.best_score if history else None,
            "test_summary": selection.test_summary,
        },
        "history": history,
        "data": data.summary(),
        "dropped_images": data.dropped_images,
        "timing": {"setup_seconds": setup_seconds, "build_seconds": build_seconds,
                   "train_seconds": train_s, "eval_seconds": eval_s},
        "environment": {"pu_mlc": __version__, "torch": torch.__version__,
                        "python": platform.python_version(), "device": str(ctx.device),
                        "world_size": ctx.world_size, "precision": precision.name,
                        "data_pipeline": resolve_pipeline(cfg, ctx.device)},
        "config": cfg.to_dict(),
    }


def _epoch_line(record: dict, cfg: TrainConfig) -> str:
    if cfg.protocol == "paper":
        scores = f"test mAP {record['mAP']:.2f} / EMA {record['mAP_ema']:.2f}"
    else:
        scores = f"val mAP {record['val_mAP']:.2f} / EMA {record['val_mAP_ema']:.2f}"
    sel = record.get("selected_test_mAP")
    return (f"epoch {record['epoch'] - 1}/{cfg.stop_epoch}  loss {record['train_loss']:.4f}  "
            f"lr {record['lr']:.2e}  {scores}  best {record['best_score']:.2f} "
            f"(epoch {record['best_epoch'] - 1})"
            + (f"  selected test mAP {sel:.2f}" if sel is not None else "")
            + f"  [{record['train_seconds']:.0f}s train, {record['eval_seconds']:.0f}s eval, "
              f"{record['images_per_second']:.1f} img/s]")


def _final_line(result: dict) -> str:
    r = result["result"]
    if r["test_mAP"] is None:
        return "no epoch finished"
    return (f"test mAP {r['test_mAP']:.2f} ({r['selected_model']} model, epoch "
            f"{r['selected_epoch'] - 1}, selected by {r['selection_metric']})")


class _RunLogFile(logging.FileHandler):
    """``train.log`` of one run: every record of the process while the run lasts.

    The per-epoch lines are INFO records of ``pu_mlc``; a caller that never configured logging
    (root at WARNING) would otherwise get an empty file, so the package logger is lowered to INFO
    for the run and restored on close.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._package = logging.getLogger("pu_mlc")
        self._saved_level = self._package.level
        if self._package.getEffectiveLevel() > logging.INFO:
            self._package.setLevel(logging.INFO)

    def close(self) -> None:
        self._package.setLevel(self._saved_level)
        super().close()


def _attach_log_file(path: Path) -> logging.Handler:
    handler = _RunLogFile(path)
    logging.getLogger().addHandler(handler)
    return handler


def _restore_history(saved: list[dict], metrics: Optional[dict]) -> list[dict]:
    """The history of a resumed run, each epoch's record as ``metrics.json`` last showed it.

    ``last.pt`` is written before its own write time is known, so its last record lacks the
    ``checkpoint_seconds`` that ``metrics.json`` holds; copy it back so resuming changes no
    earlier record.
    """
    shown = {h.get("epoch"): h for h in (metrics or {}).get("history", [])}
    for record in saved:
        seconds = shown.get(record["epoch"], {}).get("checkpoint_seconds")
        if "checkpoint_seconds" not in record and seconds is not None:
            record["checkpoint_seconds"] = seconds
    return saved


def _no_buffer_sync() -> dict:
    """DDP must not re-broadcast buffers every forward: they are constants here (eval-mode BN
    statistics, word vectors, adjacency). torch >= 2.14 spells it ``forward_sync_buffers``."""
    import inspect

    if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def _mix_seed(seed: int, rank: int, epoch: int) -> int:
    return (seed * 1_000_003 + rank * 10_007 + epoch) % (2**63 - 1)
