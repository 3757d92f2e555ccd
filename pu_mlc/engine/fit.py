"""``fit(config)``: train one configuration, alone, under ``torchrun`` or in a Ray Train worker.

The loop reads top to bottom like torchvision's reference script: resolve what ``auto`` means on
this machine, read the data and build the model (every bad input is found before anything is
written), then per epoch train (:func:`train_one_epoch`, which calls the recipe's one training
step), let the protocol evaluate and select, save ``best.pt``/``last.pt``/``metrics.json`` and
report. What differs between runs lives in two objects built from the config: the
:class:`~pu_mlc.engine.recipe.Recipe` (optimizer, OneCycle, EMA, precision, loss, step) and the
:class:`~pu_mlc.engine.protocols.Protocol` (paper or honest evaluation and selection).

Launchers differ only in the ``reporter`` callback, called on every rank after every epoch with
that epoch's metrics (Ray Train's ``report`` is a barrier, so every rank must call it). Epochs are
numbered 1..``train_epochs`` everywhere.

Reliability. A resumed run equals an uninterrupted one bit for bit (on the CPU; on CUDA up to
non-deterministic kernels): everything an epoch draws is re-derived from (seed, rank, epoch) at
its start (shuffle, augmentation, MixUp, the process's global torch/numpy/random generators), and
everything else it needs is in ``last.pt``. Divergence is caught from the first step
(:class:`~pu_mlc.engine.step.DivergenceWatch`, :func:`~pu_mlc.engine.step.loss_rise_limit`) and
raised as :class:`~pu_mlc.errors.TrainingDiverged`. ``metrics.json`` always ends with the run's
state: ``running`` while it trains, then ``finished``, ``stopped`` (nothing left to train),
``diverged``, ``failed`` (any other exception) or ``interrupted`` (KeyboardInterrupt), the last
three with a ``failure`` {reason, epoch, step}. A launcher that may run the training again after
an exception (the search retries a trial, continues it after a lost node, or is itself being
killed, which its workers see as errors from Ray) passes ``failure_is_final=False``: an exception
is then ``attempt_failed``, and the launcher, which alone knows, records whether the run ended.
"""

from __future__ import annotations

import datetime
import logging
import math
import platform
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from .. import __version__
from .. import config as config_lib
from ..errors import ConfigError, TrainingDiverged
from ..files import read_json, write_json_atomic, write_text_atomic
from ..models import build_model
from .checkpoint import load_checkpoint, save_best_weights, save_checkpoint
from .data_setup import (Loaders, RunData, build_loaders, derived_seed, prepare_run_data,
                         resolve_pipeline)
from .distributed import DistContext, setup_distributed, teardown_distributed
from .evaluate import EvalTarget
from .outputs import RunPaths, check_output_dir, prepare_output_dir
from .prefetch import DevicePrefetcher
from .precision import Precision, resolve_precision
from .progress import progress
from .protocols import Protocol, build_protocol
from .recipe import Recipe
from .step import LOSS_WINDOW_STEPS, loss_rise_limit
from .tensorboard import RunWriter

if TYPE_CHECKING:
    from ..config import TrainConfig

log = logging.getLogger(__name__)

#: ``reporter(metrics, last_checkpoint_file_or_None)``; called on every rank every epoch.
Reporter = Callable[[dict, Optional[Path]], None]

#: Parent of the output folders of runs that name none (one dated folder per run, as timm does).
DEFAULT_RUNS_DIR = Path("runs") / "train"


def fit(cfg: TrainConfig, *, reporter: Optional[Reporter] = None,
        device: Optional[torch.device] = None, resume_checkpoint: Optional[Path] = None,
        checkpoint_dir: Optional[Path] = None, hparams: Optional[dict] = None,
        failure_is_final: bool = True) -> dict:
    """Train one configuration; return the final result (also written to ``metrics.json``).

    ``resume_checkpoint`` and ``checkpoint_dir`` are given by launchers that keep the resume
    state themselves: Ray Train restores a trial from its own checkpoint, and the engine writes
    each epoch's ``last.pt`` into ``checkpoint_dir`` (a local scratch folder) for the reporter
    to hand to Ray, instead of ``OUTPUT_DIR/checkpoints/last.pt``; ``cfg.resume`` resumes from
    the latter. ``hparams`` (given by a search) are the values of this run in the TensorBoard
    HParams tab, whose experiment-wide definition the search writes; without them the run
    defines its own from its whole config. ``failure_is_final=False``: an exception is recorded
    as ``attempt_failed`` rather than ``failed`` (see the module docstring).
    """
    if not cfg.data:
        raise ConfigError("data (DATA_ROOT) is empty: give the dataset root directory")
    with config_lib.field_errors("device"):
        ctx = setup_distributed(cfg.device, device)
    log_handler = None
    try:
        cfg, precision = resolve_for_this_machine(cfg, ctx)
        paths = (RunPaths(Path(cfg.output_dir).resolve()) if resume_checkpoint is not None
                 else check_output_dir(cfg))
        if checkpoint_dir is not None:
            paths = paths.with_last_checkpoint_in(Path(checkpoint_dir))
        if resume_checkpoint is None and cfg.resume:
            resume_checkpoint = paths.last_checkpoint
        # read (safely) before anything is written: a bad or crafted last.pt changes nothing
        resume_state = load_checkpoint(resume_checkpoint) if resume_checkpoint is not None else None
        t0 = time.perf_counter()
        data = prepare_run_data(cfg, ctx)
        t1 = time.perf_counter()
        model = build_run_model(cfg, data)
        timing = {"setup_seconds": t1 - t0, "build_seconds": time.perf_counter() - t1}
        ctx.barrier()                       # every rank checked everything before rank 0 writes
        if ctx.is_main:
            # a resumed run keeps its files; --overwrite replaces those of an earlier run
            prepare_output_dir(paths, clear=cfg.overwrite and resume_checkpoint is None)
            write_text_atomic(paths.config, cfg.to_yaml())
            log_handler = _attach_log_file(paths.log_file)
        ctx.barrier()
        run = _RunState(paths, cfg, failure_is_final)
        try:
            return _train(cfg, ctx, paths, data, model, precision, timing, run, reporter=reporter,
                          resume_checkpoint=resume_checkpoint, resume_state=resume_state,
                          hparams=hparams)
        except BaseException as err:
            if ctx.is_main:
                run.record_failure(err, log_handler)
            raise
    finally:
        if log_handler is not None:
            logging.getLogger().removeHandler(log_handler)
            log_handler.close()
        teardown_distributed(ctx)


def resolve_for_this_machine(cfg: TrainConfig, ctx: DistContext
                             ) -> tuple[TrainConfig, Precision]:
    """The config with every 'auto' made concrete (precision, data pipeline, output folder), as
    the run records it, and the precision object. Every rank gets the same answer."""
    with config_lib.field_errors("precision"):
        precision = resolve_precision(cfg.precision, ctx.device)
    output_dir = cfg.output_dir or ctx.broadcast_object(
        new_run_dir(cfg) if ctx.is_main else None)
    return cfg.resolved(precision=precision.name, output_dir=output_dir,
                        data_pipeline=resolve_pipeline(cfg, ctx.device)), precision


def new_run_dir(cfg: TrainConfig, parent: Path = DEFAULT_RUNS_DIR) -> str:
    """A fresh dated folder name for a run that names none: DATE-TIME-DATASET-MODEL[-N]."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = parent / f"{stamp}-{cfg.dataset}-{cfg.model_name}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = Path(f"{base}-{n}")
    return str(candidate)


def build_run_model(cfg: TrainConfig, data: RunData) -> nn.Module:
    """The network of ``cfg`` for ``data``, with the same initial weights on every rank. It is
    built (and --pretrainedModel read) before anything is written, so a bad weight file or model
    name leaves the output dir untouched, like every other bad input."""
    torch.manual_seed(cfg.seed)
    return build_model(cfg.model_name, data.num_classes, head=cfg.head,
                       word_vectors=data.word_vectors, adjacency=data.adjacency,
                       pretrained=cfg.pretrained_model, lgc=cfg.lgc, lgc_impl=cfg.lgc_impl,
                       head_dim=cfg.head_dim)


def _train(cfg: TrainConfig, ctx: DistContext, paths: RunPaths, data: RunData,
           model: nn.Module, precision: Precision, timing: dict, run: "_RunState", *,
           reporter: Optional[Reporter], resume_checkpoint: Optional[Path],
           resume_state: Optional[dict], hparams: Optional[dict]) -> dict:
    t_build = time.perf_counter()
    model.to(ctx.device)
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True          # fixed input sizes: pick fastest kernels
    loaders = build_loaders(cfg, data, ctx, model.input_mean, model.input_std)
    recipe = Recipe.build(cfg, model, len(loaders.train), ctx, precision)
    protocol = _build_protocol(cfg, data, loaders, ctx)
    history: list[dict] = []
    done = 0                                           # epochs trained before this call
    if resume_state is not None:
        done, history = _resume(resume_checkpoint, resume_state, recipe, protocol, paths)
    run.payload = lambda status: _metrics_payload(cfg, data, ctx, model, protocol, history,
                                                  status, timing)
    writer = RunWriter(paths.tensorboard(cfg), enabled=ctx.is_main,
                       purge_step=done + 1 if done else None)
    run.writer = writer                     # closed by fit also when an epoch raises
    writer.hparams_start(hparams if hparams is not None else cfg.to_dict(), cfg.protocol,
                         resumed=done > 0, define_experiment=hparams is None)
    timing["build_seconds"] += time.perf_counter() - t_build
    if ctx.is_main:
        _log_run_start(cfg, ctx, data, model, loaders)

    generator = torch.Generator()          # MixUp draws: on the CPU, no device->host sync
    status = "stopped"
    for epoch in range(done + 1, cfg.train_epochs + 1):
        run.epoch = epoch
        # Every random draw of the epoch depends on (seed, rank, epoch) only, so a resumed run
        # repeats them exactly: shuffle and augmentation (loaders), MixUp, and the process's
        # global generators (nothing draws from them today; this keeps it so for new code).
        loaders.set_epoch(epoch)
        generator.manual_seed(_mix_seed(cfg.seed, ctx.rank, epoch))
        seed_global_generators(derived_seed(cfg.seed, ctx.rank, epoch, -2))
        record = {"epoch": epoch, **train_one_epoch(recipe, loaders, ctx, epoch,
                                                    cfg.train_epochs, generator,
                                                    num_classes=data.num_classes)}
        if done and epoch == done + 1:
            record["resumed_from_checkpoint"] = True
        t_eval = time.perf_counter()
        improved = protocol.evaluate(record, epoch, {"regular": model, "ema": recipe.ema.module},
                                     ctx, precision)
        record["eval_seconds"] = time.perf_counter() - t_eval
        selection = protocol.selection
        record.update(best_score=selection.best_score, best_epoch=selection.best_epoch)
        if selection.test_map is not None:
            record["selected_test_mAP"] = selection.test_map
        history.append(record)

        last_file: Optional[Path] = None
        if ctx.is_main:
            t_ckpt = time.perf_counter()
            if improved:
                chosen = recipe.ema.module if selection.best_model == "ema" else model
                save_best_weights(paths.best_checkpoint, chosen, cfg.to_dict(), data.class_names,
                                  epoch, selection.best_model, selection.best_score,
                                  thresholds=selection.thresholds)
            save_checkpoint(paths.last_checkpoint, recipe_state=recipe.state_dict(), epoch=epoch,
                            selection=selection.state_dict(), history=history)
            last_file = paths.last_checkpoint
            record["checkpoint_seconds"] = time.perf_counter() - t_ckpt
            writer.scalars(protocol.scalars(record), step=epoch)
            write_json_atomic(paths.metrics, _metrics_payload(
                cfg, data, ctx, model, protocol, history, "running", timing))
            log.info(_epoch_line(record, cfg.train_epochs, protocol))
        if reporter is not None:
            reporter(dict(record), last_file)
        ctx.barrier()
        status = "finished"

    result = _metrics_payload(cfg, data, ctx, model, protocol, history, status, timing)
    if ctx.is_main:
        write_json_atomic(paths.metrics, result)
        writer.hparams_end()
        log.info("done: %s", _final_line(result))
    writer.close()
    return result


def train_one_epoch(recipe: Recipe, loaders: Loaders, ctx: DistContext, epoch: int,
                    epochs: int, generator: torch.Generator, *,
                    num_classes: Optional[int] = None) -> dict:
    """One pass over the training split with :meth:`Recipe.train_step`; the epoch's statistics.

    Raises :class:`~pu_mlc.errors.TrainingDiverged` when the loss or the gradients turn
    non-finite (seen on the device every step, read on the first step and at the sync points:
    every 50 steps, every step on a single CPU process, the end of the epoch) or when the mean
    loss of the epoch or of a 50-step window exceeds :func:`~pu_mlc.engine.step.loss_rise_limit`
    (with ``num_classes``; the reference, the run's first loss, is kept in the recipe's state).
    """
    recipe.net.train()                      # the model keeps every BatchNorm in eval mode
    watch = recipe.watch
    if watch is not None:
        watch.start_epoch()
    total = torch.zeros((), dtype=torch.float64, device=ctx.device)
    steps, wait = 0, 0.0
    window = (0.0, 0)                       # (loss sum, steps) at the last window check
    t_start = t_fetch = time.perf_counter()
    # Reading the device costs nothing on a single CPU process; elsewhere only at sync points.
    read_every = 1 if ctx.device.type == "cpu" and not ctx.distributed else LOSS_WINDOW_STEPS

    def to_device(batch) -> tuple[torch.Tensor, torch.Tensor]:
        x = loaders.to_input(batch, ctx.device, train=True)
        if recipe.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, batch[1].to(ctx.device, non_blocking=True)

    if loaders.device_transform_train is not None:    # decode/augment on the device, ahead
        batches = DevicePrefetcher(loaders.train, to_device, ctx.device)
    else:
        batches = (to_device(b) for b in loaders.train)
    n_batches = len(loaders.train)
    bar = progress(batches, total=n_batches, enabled=ctx.is_main, desc=f"epoch {epoch}/{epochs}")
    try:
        for x, targets in bar:
            wait += time.perf_counter() - t_fetch
            loss = recipe.train_step(x, targets, generator)
            total += loss
            steps += 1
            sync = steps % LOSS_WINDOW_STEPS == 0 or steps == n_batches
            if steps == 1 or sync or steps % read_every == 0:
                _raise_if_non_finite(watch, total, steps, ctx, epoch)
            if steps == 1 and watch is not None and watch.first_loss is None:
                watch.first_loss = ctx.all_reduce_mean(float(loss.item()))  # rule's reference
            if sync:
                value = float(total.item())
                if steps % LOSS_WINDOW_STEPS == 0:
                    mean = ctx.all_reduce_mean((value - window[0]) / (steps - window[1]))
                    _raise_if_loss_rose(mean, f"over steps {window[1] + 1}-{steps}", watch,
                                        num_classes, epoch, steps)
                    window = (value, steps)
                bar.set_postfix(loss=f"{value / steps:.4f}", lr=f"{recipe.lr:.2e}")
            t_fetch = time.perf_counter()
    finally:
        bar.close()
    seconds = time.perf_counter() - t_start
    images = steps * loaders.train.batch_size * ctx.world_size
    train_loss = ctx.all_reduce_mean(float(total.item()) / max(steps, 1))
    _raise_if_loss_rose(train_loss, "over the epoch", watch, num_classes, epoch, steps)
    return {"train_loss": train_loss,
            "lr": recipe.lr, "train_seconds": seconds, "data_wait_seconds": wait,
            "steps": steps, "images_per_second": images / max(seconds, 1e-9)}


def _raise_if_non_finite(watch, total: torch.Tensor, steps: int, ctx: DistContext,
                         epoch: int) -> None:
    """TrainingDiverged if any rank saw a non-finite loss or gradient (one sync)."""
    if watch is not None:
        found = watch.poll()
    else:                                   # a recipe without a watch: the summed loss only
        value = float(total.item())
        found = None if math.isfinite(value) else (f"the training loss is {value}", steps)
    if ctx.distributed:                     # every rank raises together (or none does)
        seen = [f for f in ctx.all_gather_object(found) if f is not None]
        found = min(seen, key=lambda f: f[1]) if seen else None
    if found is not None:
        raise TrainingDiverged(found[0], epoch, found[1])


def _raise_if_loss_rose(mean: float, where: str, watch, num_classes: Optional[int], epoch: int,
                        steps: int) -> None:
    if not math.isfinite(mean):
        raise TrainingDiverged(f"the mean training loss {where} is {mean}", epoch, steps)
    if watch is None or watch.first_loss is None or not num_classes:
        return
    limit = loss_rise_limit(watch.first_loss, num_classes)
    if mean > limit:
        raise TrainingDiverged(
            f"the mean training loss {where} is {mean:.4g}, above {limit:.4g} (10 x |first loss "
            f"{watch.first_loss:.4g}| + {num_classes} classes)", epoch, steps)


def seed_global_generators(seed: int) -> None:
    """Seed the process's global torch (CPU and CUDA), numpy and ``random`` generators."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


# ------------------------------------------------------------------------------------------------
def _build_protocol(cfg: TrainConfig, data: RunData, loaders: Loaders,
                    ctx: DistContext) -> Protocol:
    test = EvalTarget("test", loaders.test, data.test.targets == 1, None, data.class_names)
    val = None
    if data.val is not None:
        t = data.val.targets
        val = EvalTarget("val", loaders.val, t == 1, t != 0, data.class_names)
    return build_protocol(cfg.protocol, test, val, f1_mode=cfg.f1_thresholds,
                          to_input=lambda b: loaders.to_input(b, ctx.device, train=False))


def _resume(checkpoint: Optional[Path], state: dict, recipe: Recipe, protocol: Protocol,
            paths: RunPaths) -> tuple[int, list[dict]]:
    recipe.load_state_dict(state["recipe"])
    protocol.selection = type(protocol.selection).from_state(state["selection"])
    history = _restore_history(state["history"], read_json(paths.metrics))
    log.info("resumed from %s after epoch %d", checkpoint, state["epoch"])
    return state["epoch"], history


def _log_run_start(cfg: TrainConfig, ctx: DistContext, data: RunData, model: nn.Module,
                   loaders: Loaders) -> None:
    counts = model.parameter_counts()
    log.info("data: %s", data.summary())
    log.info("model: %s + %s head, %s parameters (%s trainable; LGC %s, head %s), word vectors "
             "%s", cfg.model_name, cfg.head, f"{counts['total']:,}", f"{counts['trainable']:,}",
             f"{counts['lgc']:,}", f"{counts['head']:,}",
             "x".join(map(str, data.word_vectors.shape)) if data.word_vectors is not None
             else "none")
    log.info("run: %s on %s, %s precision, %s pipeline, %d steps/epoch x %d process(es), "
             "epochs 1..%d of a %d-epoch OneCycle, output %s", cfg.protocol, ctx.device,
             cfg.precision, cfg.data_pipeline, len(loaders.train), ctx.world_size,
             cfg.train_epochs, cfg.epochs, cfg.output_dir)
    if model.load_report is not None:          # built before train.log existed: repeat it there
        log.info("pretrained weights %s", model.load_report.summary())


def _metrics_payload(cfg: TrainConfig, data: RunData, ctx: DistContext, model: nn.Module,
                     protocol: Protocol, history: list[dict], status: str,
                     timing: dict) -> dict:
    return {
        "status": status,
        "protocol": cfg.protocol,
        "result": protocol.result(),
        "history": history,
        "data": data.summary(),
        "dropped_images": data.dropped_images,
        "model": model.parameter_counts(),
        "timing": {**timing, "train_seconds": sum(h["train_seconds"] for h in history),
                   "eval_seconds": sum(h["eval_seconds"] for h in history)},
        "environment": {"pu_mlc": __version__, "torch": torch.__version__,
                        "python": platform.python_version(), "device": str(ctx.device),
                        "world_size": ctx.world_size, "precision": cfg.precision,
                        # intra-op threads: another count changes the order of float sums
                        "torch_threads": torch.get_num_threads(),
                        "data_pipeline": cfg.data_pipeline},
        "config": cfg.to_dict(),
    }


def _epoch_line(record: dict, epochs: int, protocol: Protocol) -> str:
    sel = record.get("selected_test_mAP")
    return (f"epoch {record['epoch']}/{epochs}  loss {record['train_loss']:.4f}  "
            f"lr {record['lr']:.2e}  {protocol.scores_text(record)}  best "
            f"{record['best_score']:.2f} (epoch {record['best_epoch']})"
            + (f"  selected test mAP {sel:.2f}" if sel is not None else "")
            + f"  [{record['train_seconds']:.0f}s train, {record['eval_seconds']:.0f}s eval, "
              f"{record['images_per_second']:.1f} img/s]")


def _final_line(result: dict) -> str:
    r = result["result"]
    if r["test_mAP"] is None:
        return "no epoch finished"
    return (f"test mAP {r['test_mAP']:.2f} ({r['selected_model']} model, epoch "
            f"{r['selected_epoch']}, selected by {r['selection_metric']})")


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


class _RunState:
    """What ``fit`` needs to record a run that raised: its ``metrics.json`` payload (once the
    training objects exist), the epoch in progress and the TensorBoard writer to close."""

    def __init__(self, paths: RunPaths, cfg: TrainConfig, failure_is_final: bool = True) -> None:
        self.paths, self.cfg = paths, cfg
        self.failure_is_final = failure_is_final
        self.payload: Optional[Callable[[str], dict]] = None
        self.epoch: Optional[int] = None
        self.writer: Optional[RunWriter] = None

    def record_failure(self, err: BaseException, log_handler: Optional[logging.Handler]) -> None:
        """Close TensorBoard and write ``metrics.json`` with the failed run's status and reason
        (never masking ``err``: a failure to record is only logged)."""
        if self.writer is not None:
            self.writer.close()
        status, failure = failure_of(err, self.epoch, final=self.failure_is_final)
        try:
            if self.payload is not None:
                payload = self.payload(status)
            else:                           # raised before training started: keep what was shown
                payload = {**(read_json(self.paths.metrics) or {}), "status": status,
                           "config": self.cfg.to_dict()}
            payload["failure"] = failure
            write_json_atomic(self.paths.metrics, payload)
        except Exception as write_err:  # noqa: BLE001 (the original error is what matters)
            log.warning("could not record the %s run in %s: %s", status, self.paths.metrics,
                        write_err)
        if log_handler is not None:         # in train.log; the console gets the error itself
            log_handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0,
                                              "run %s: %s", (status, failure["reason"]), None))


def failure_of(err: BaseException, epoch: Optional[int],
               final: bool = True) -> tuple[str, dict[str, Any]]:
    """``metrics.json``'s status and ``failure`` {reason, epoch, step} for an exception
    (``final=False``: an error is ``attempt_failed``, its launcher may run it again)."""
    if isinstance(err, TrainingDiverged):
        return "diverged", {"reason": err.reason, "epoch": err.epoch, "step": err.step,
                            "message": str(err)}
    text = " ".join(str(err).split())
    reason = f"{type(err).__name__}: {text}" if text else type(err).__name__
    if not isinstance(err, Exception):
        status = "interrupted"
    else:
        status = "failed" if final else "attempt_failed"
    return status, {"reason": reason, "epoch": epoch, "step": None}


def _mix_seed(seed: int, rank: int, epoch: int) -> int:
    return (seed * 1_000_003 + rank * 10_007 + epoch) % (2**63 - 1)
