"""Shared pieces of the benchmarks: the published and our training step, timers, memory meters.

The published PU-MLC step (the official code, derived from ASL) and the step our engine runs
(``pu_mlc.engine.fit``) are built here from the *same* seeded network, so the scripts in
``bench/`` compare them side by side in one process on the same inputs:

``published``
    ``lgc_impl='literal'`` (SPEC §3 op order), NCHW, fp16 autocast + ``GradScaler`` on CUDA (fp32
    on CPU, where fp16 autocast does not exist), eager, two forward passes per step
    (``compute_loss(fused=False)``: batch, then its MixUp), single-tensor Adam
    (``foreach=False``: the per-parameter loop of the 2023-era ``torch.optim.Adam``), OneCycle,
    and ASL's ``ModelEma`` (a Python loop over the whole ``state_dict``, one
    ``decay * e + (1 - decay) * m`` per tensor, after every step).
``ours``
    the engine's own :class:`pu_mlc.engine.recipe.Recipe`, built from a ``TrainConfig`` exactly as
    ``fit`` builds it, and its ``train_step`` (the one step ``fit`` runs): ``lgc_impl='fast'``,
    bf16 autocast without a scaler where the GPU supports it (fp32 on CPU), channels_last on
    CUDA, fused Adam on CUDA, the fused single forward pass, OneCycle, ``TrainableStateEma`` (one
    foreach lerp over the trainable tensors) per step. Nothing of it is re-implemented here.
``published_nolgc``
    the published step on the same network without the local-global branches: a reference
    ceiling (what the step would cost if the branches were free).

Weights are random (no pretrained weights are needed: the speed of a step does not depend on the
weight values), but every BatchNorm's running statistics are calibrated on one random batch, so
activations have unit scale like a pretrained network's. Without that a random ResNet-101's
activations grow to ~1e4, fp16 overflows, and the GradScaler skips steps, which would flatter the
published path (a skipped step does no optimizer update).

Only torch, torchvision, timm, numpy (and this repository) are needed; the repository root is put
on ``sys.path`` so the scripts run from a source tree without installing the package.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.modules.batchnorm import _BatchNorm  # noqa: E402

from pu_mlc.config import TrainConfig  # noqa: E402
from pu_mlc.data.partial import label_cooccurrence, partial_labels  # noqa: E402
from pu_mlc.engine.distributed import DistContext  # noqa: E402
from pu_mlc.engine.precision import Precision, resolve_precision  # noqa: E402
from pu_mlc.engine.recipe import Recipe  # noqa: E402
from pu_mlc.engine.step import compute_loss, optimizer_step  # noqa: E402
from pu_mlc.losses import PULoss  # noqa: E402
from pu_mlc.models import build_model, set_lgc_impl  # noqa: E402

#: The published COCO setting (SPEC §2, §4) is TrainConfig's default; both paths train with it.
PUBLISHED = TrainConfig()
LABEL_PROB = 0.1            # fraction of label entries kept (MLC-PL, 10% labels)
POSITIVES_PER_IMAGE = 2.9   # COCO-2014's mean
WORD_DIM = 300              # GloVe 300-d in the paper; random vectors here


# ------------------------------------------------------------------------------------------------
# environment
def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine "
                         f"(torch {torch.__version__}); use --device cpu")
    return device


def resolve_device_args(args, defaults: dict) -> torch.device:
    """The device of ``args.device``, ``args.threads`` applied, and every size flag left unset
    filled from ``defaults['cuda' | 'cpu']``: the common start of the bench scripts."""
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    for k, v in defaults["cuda" if device.type == "cuda" else "cpu"].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return device


def environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(),
           "device": str(device), "cpu_threads": torch.get_num_threads(),
           "cpu_count": os.cpu_count()}
    try:
        import timm
        import torchvision
        env.update(torchvision=torchvision.__version__, timm=timm.__version__)
    except ImportError:
        pass
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                   bf16_supported=torch.cuda.is_bf16_supported(),
                   cudnn_benchmark=torch.backends.cudnn.benchmark)
    else:
        env["cpu"] = platform.processor() or platform.machine()
    return env


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fp32_exact_math(enabled: bool = True) -> dict:
    """Turn TF32 off (or restore it) so that 'fp32' comparisons are really fp32."""
    old = {"matmul": torch.backends.cuda.matmul.allow_tf32,
           "cudnn": torch.backends.cudnn.allow_tf32}
    if enabled:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return old


def restore_math(old: dict) -> None:
    torch.backends.cuda.matmul.allow_tf32 = old["matmul"]
    torch.backends.cudnn.allow_tf32 = old["cudnn"]


# ------------------------------------------------------------------------------------------------
# memory
def _proc_status_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


class MemoryMeter:
    """Peak memory of one measured section.

    CUDA: ``torch.cuda.max_memory_allocated`` after a reset (tensors only, what the caching
    allocator handed out; ``reserved`` is also recorded). CPU: the kernel's peak resident set
    size of the process (``VmHWM``, reset at the start through ``/proc/self/clear_refs``) minus
    the RSS at the start: an indication only (the C allocator may keep memory freed by an earlier
    section, and the shared input batch and network copy count for every path alike).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0
        self.base = 0
        self.reserved = None
        self.available = True

    def __enter__(self) -> "MemoryMeter":
        free_memory()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            base = _proc_status_kib("VmRSS")
            self.available = base is not None and _reset_peak_rss()
            self.base = (base or 0) * 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
            self.reserved = torch.cuda.max_memory_reserved(self.device)
        elif self.available:
            self.peak = (_proc_status_kib("VmHWM") or 0) * 1024

    @property
    def kind(self) -> str:
        if self.device.type == "cuda":
            return "cuda max_memory_allocated"
        return "CPU peak RSS increase (VmHWM)" if self.available else "n/a"

    def result(self) -> dict:
        if self.device.type == "cuda":
            return {"peak_gib": self.peak / 2**30, "peak_reserved_gib": self.reserved / 2**30,
                    "base_gib": self.base / 2**30, "memory_kind": self.kind}
        if not self.available:
            return {"peak_gib": None, "memory_kind": self.kind}
        return {"peak_gib": max(self.peak - self.base, 0) / 2**30, "memory_kind": self.kind}


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    _malloc_trim()


# ------------------------------------------------------------------------------------------------
# inputs and the seeded network
def synthetic_labels(n: int, classes: int, seed: int) -> np.ndarray:
    """Full labels in {+1, -1}: each class present with probability 2.9/C, >= 1 per image."""
    rng = np.random.default_rng(seed)
    p = min(POSITIVES_PER_IMAGE / classes, 0.5)
    full = rng.random((n, classes)) < p
    full[np.arange(n), rng.integers(0, classes, n)] = True
    return np.where(full, 1, -1).astype(np.int8)


def synthetic_batch(batch: int, size: int, classes: int, seed: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """One normalised image batch (N(0,1) pixels) and its 10% partial targets, on the CPU.

    The first image always keeps at least one known positive (as a real batch of 35 COCO images
    with 10% labels almost surely does), so the PU loss's positive term is exercised.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=gen)
    full = synthetic_labels(batch, classes, seed)
    targets = partial_labels(full, LABEL_PROB, seed=0).astype(np.float32)
    if not (targets == 1).any():
        targets[0, int(np.flatnonzero(full[0] == 1)[0])] = 1.0
    return x, torch.from_numpy(targets)


def word_vectors(classes: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 1]).standard_normal((classes, WORD_DIM)).astype(np.float32)


def adjacency(classes: int, seed: int) -> np.ndarray:
    """Co-occurrence of 10% partial labels over 4,000 synthetic images (COCO-like density)."""
    full = synthetic_labels(4000, classes, seed + 7)
    return label_cooccurrence(partial_labels(full, LABEL_PROB, seed=0))


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, x: torch.Tensor) -> None:
    """Set every BN's running statistics to the statistics of ``x``'s activations (one pass).

    Stands in for pretrained statistics: activations stay O(1) through all 101 layers.
    """
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None          # cumulative average: exactly this batch's statistics
        bn.train()
    model(x)
    for bn in bns:
        bn.momentum = 0.1
    model.train()                   # PUMLCNet.train keeps every BN in eval mode


def build_master(model_name: str, classes: int, *, lgc: bool, seed: int,
                 calib_size: int = 160, calib_batch: int = 4) -> nn.Module:
    """The seeded CPU network every path copies (LGC built in the literal form)."""
    torch.manual_seed(seed)
    model = build_model(model_name, classes, head="ssgrl", word_vectors=word_vectors(classes, seed),
                        adjacency=adjacency(classes, seed), lgc=lgc, lgc_impl="literal")
    gen = torch.Generator().manual_seed(seed + 1)
    calibrate_batchnorm(model, torch.randn(calib_batch, 3, calib_size, calib_size, generator=gen))
    return model


# ------------------------------------------------------------------------------------------------
# the two formulations
class PublishedModelEma(nn.Module):
    """ASL's ``ModelEma`` as the official PU-MLC code uses it: one Python-level update per entry of
    the whole ``state_dict`` (frozen weights and buffers included), after every step."""

    def __init__(self, model: nn.Module, decay: float = PUBLISHED.ema):
        super().__init__()
        self.module = copy.deepcopy(model)
        self.module.eval()
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_v, model_v in zip(self.module.state_dict().values(),
                                  model.state_dict().values()):
            ema_v.copy_(self.decay * ema_v + (1.0 - self.decay) * model_v)


@dataclass(frozen=True)
class PathSpec:
    name: str
    lgc: bool
    lgc_impl: str               # 'literal' | 'fast' (ignored without LGC)
    precision: str              # 'fp16' | 'bf16' | 'fp32'
    channels_last: bool
    adam: str                   # 'single' (foreach=False) | 'fused' | 'default'
    fused_step: bool            # one forward on cat(x, x_mix) vs two passes
    ema: str                    # 'asl' | 'trainable'
    compile: bool = False
    note: str = ""

    def describe(self) -> dict:
        return asdict(self)


def published_spec(device: torch.device, lgc: bool = True) -> PathSpec:
    cuda = device.type == "cuda"
    return PathSpec(
        name="published" if lgc else "published_nolgc", lgc=lgc, lgc_impl="literal",
        precision="fp16" if cuda else "fp32", channels_last=False, adam="single",
        fused_step=False, ema="asl",
        note="" if cuda else "fp32: CPU autocast has no fp16 (the published fp16+GradScaler "
                             "needs CUDA)")


def ours_spec(device: torch.device, precision: str = "auto", compile: bool = False) -> PathSpec:
    cuda = device.type == "cuda"
    prec = resolve_precision(precision, device).name
    return PathSpec(
        name="ours_compiled" if compile else "ours", lgc=True, lgc_impl="fast", precision=prec,
        channels_last=cuda, adam="fused" if cuda else "default", fused_step=True, ema="trainable",
        compile=compile)


class Trainer:
    """One path's network on the device and its training step.

    ``ours``: the engine's :class:`Recipe` built from the published ``TrainConfig`` (precision
    and compile from the spec), and ``step`` is :meth:`Recipe.train_step`, the step ``fit`` runs.
    ``published``: the official code's choices (single-tensor Adam, ASL's ``ModelEma``, two
    forward passes, fp16 + GradScaler on CUDA) with the same published hyper-parameters.
    """

    def __init__(self, master: nn.Module, spec: PathSpec, device: torch.device, *, seed: int = 0,
                 steps_per_epoch: int = 3000):
        self.spec = spec
        self.device = device
        model = copy.deepcopy(master)
        if spec.lgc:
            set_lgc_impl(model, spec.lgc_impl)
        model.to(device)
        model.train()
        self.model = model
        self.precision: Precision = resolve_precision(spec.precision, device)
        self.recipe: Optional[Recipe] = None
        if spec.name.startswith("ours"):
            cfg = PUBLISHED.replace(precision=spec.precision, compile=spec.compile,
                                    channels_last=spec.channels_last)
            self.recipe = Recipe.build(cfg, model, steps_per_epoch,
                                       DistContext(0, 1, 0, device), self.precision)
            self.net, self.ema, self.scaler = self.recipe.net, self.recipe.ema, self.recipe.scaler
        else:
            if spec.channels_last:
                model.to(memory_format=torch.channels_last)
            kwargs: dict[str, Any] = {"foreach": False} if spec.adam == "single" else {}
            self.optimizer = torch.optim.Adam(model.trainable_parameters(), lr=PUBLISHED.lr,
                                              weight_decay=PUBLISHED.weight_decay, **kwargs)
            self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
                self.optimizer, max_lr=PUBLISHED.lr, epochs=PUBLISHED.epochs,
                steps_per_epoch=steps_per_epoch, pct_start=PUBLISHED.pct_start)
            self.ema = PublishedModelEma(model)
            self.scaler = self.precision.grad_scaler()
            self.criterion = PULoss(alpha=PUBLISHED.alpha, gamma=PUBLISHED.gamma)
            self.net = torch.compile(model) if spec.compile else model
        # MixUp draws on a CPU generator in both paths, as fit does (and the published code drew
        # its permutation and Beta sample on the CPU): identical draws, no device->host sync
        self.generator = torch.Generator()
        self.seed = seed
        self.reset_generator()

    def reset_generator(self) -> None:
        """Same MixUp draws (lam, perm) in every path: the same seed before the first step."""
        self.generator.manual_seed(self.seed)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.spec.channels_last and x.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def step(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.prepare(x)
        if self.recipe is not None:
            return self.recipe.train_step(x, targets, self.generator)
        loss, _ = compute_loss(self.net, x, targets, self.criterion, self.precision,
                               mixup_alpha=PUBLISHED.mixup_alpha, generator=self.generator,
                               fused=self.spec.fused_step)
        optimizer_step(loss, self.optimizer, self.scaler)
        self.scheduler.step()
        self.ema.update(self.model)
        return loss.detach()

    def ema_model(self) -> nn.Module:
        return self.ema.module

    def close(self) -> None:
        for name in ("net", "model", "optimizer", "scheduler", "ema", "scaler", "recipe"):
            setattr(self, name, None)
        free_memory()


def timed_steps(trainer: Trainer, x: torch.Tensor, targets: torch.Tensor, *, warmup: int,
                steps: int) -> dict:
    """Warm-up steps, then ``steps`` timed steps on the same batch; rate, latency, first loss."""
    device = trainer.device
    targets = targets.to(device)
    trainer.reset_generator()
    losses = []
    first_step_s = None
    t0 = time.perf_counter()
    for i in range(warmup):
        losses.append(trainer.step(x, targets))
        if i == 0:
            sync(device)
            first_step_s = time.perf_counter() - t0
    sync(device)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        losses.append(trainer.step(x, targets))
    sync(device)
    seconds = time.perf_counter() - t0
    values = [float(v) for v in torch.stack(losses).float().cpu()]
    out = {"steps": steps, "warmup": warmup, "seconds": seconds,
           "ms_per_step": 1000.0 * seconds / max(steps, 1),
           "images_per_s": steps * x.shape[0] / max(seconds, 1e-12),
           "first_step_s": first_step_s, "warmup_s": warm_s,
           "first_loss": values[0] if values else None,
           "last_loss": values[-1] if values else None,
           "finite": bool(np.all(np.isfinite(values)))}
    if trainer.scaler is not None:
        out["grad_scale"] = float(trainer.scaler.get_scale())
    return out


def _first_losses(master: nn.Module, x: torch.Tensor, targets: torch.Tensor,
                  device: torch.device, dtype: torch.dtype, seed: int) -> dict:
    fp32 = resolve_precision("fp32", device)      # no autocast: the model's own dtype
    crit = PULoss(alpha=PUBLISHED.alpha, gamma=PUBLISHED.gamma)
    out = {}
    for name, impl, cl, fused in (("published", "literal", False, False),
                                  ("ours", "fast", device.type == "cuda", True)):
        model = copy.deepcopy(master)
        set_lgc_impl(model, impl)
        model.to(device=device, dtype=dtype).train()
        xd = x.to(device=device, dtype=dtype)
        if cl:
            model.to(memory_format=torch.channels_last)
            xd = xd.contiguous(memory_format=torch.channels_last)
        gen = torch.Generator(device=device).manual_seed(seed)
        with torch.no_grad():
            loss, logits = compute_loss(model, xd, targets.to(device), crit, fp32,
                                        mixup_alpha=PUBLISHED.mixup_alpha, generator=gen,
                                        fused=fused)
        out[name] = (float(loss), logits.double().cpu())
        del model, xd, loss, logits
        free_memory()
    return out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def loss_parity(master: nn.Module, x: torch.Tensor, targets: torch.Tensor,
                device: torch.device, seed: int = 0) -> dict:
    """First-step loss and logits of the published and our formulation, same weights/batch/draw.

    Published: literal branch, NCHW, two passes. Ours: fast branch, channels_last on CUDA, one
    fused pass. In float64 the two must agree to rounding (the same function, computed in another
    order: < 1e-6 relative, the logits being cast to float32 by the model). In fp32 (TF32 off)
    they must agree within fp32 rounding of this network: < 1e-4, or within 3x the larger of each
    path's own distance to the float64 result (a random network at small inputs can be
    ill-conditioned, so its fp32 rounding alone can exceed 1e-4).
    """
    old = fp32_exact_math()
    try:
        r64 = _first_losses(master, x, targets, device, torch.float64, seed)
        r32 = _first_losses(master, x, targets, device, torch.float32, seed)
    finally:
        restore_math(old)
    (l64p, z64p), (l64o, z64o) = r64["published"], r64["ours"]
    (l32p, z32p), (l32o, z32o) = r32["published"], r32["ours"]
    rel64 = {"loss": abs(l64p - l64o) / max(abs(l64p), 1e-12), "logits": _rel(z64o, z64p)}
    rel32 = {"loss": abs(l32p - l32o) / max(abs(l32p), 1e-12), "logits": _rel(z32o, z32p)}
    noise = {"loss": max(abs(l32p - l64p), abs(l32o - l64o)) / max(abs(l64p), 1e-12),
             "logits": max(_rel(z32p, z64p), _rel(z32o, z64p))}
    tol32 = {k: max(1e-4, 3.0 * noise[k]) for k in noise}
    ok64 = rel64["loss"] < 1e-6 and rel64["logits"] < 1e-6
    ok32 = all(rel32[k] <= tol32[k] for k in rel32)
    return {"images": int(x.shape[0]),
            "fp32": {"published_loss": l32p, "ours_loss": l32o, "rel_diff": rel32,
                     "fp32_rounding_vs_fp64": noise, "tolerance": tol32, "ok": ok32},
            "fp64": {"published_loss": l64p, "ours_loss": l64o, "rel_diff": rel64,
                     "tolerance": 1e-6, "ok": ok64},
            "ok": bool(ok32 and ok64)}


# ------------------------------------------------------------------------------------------------
# output
def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_json(path: Optional[str], payload: dict) -> None:
    if not path:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(p)


def write_text(path: Optional[str], text: str) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
