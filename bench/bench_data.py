#!/usr/bin/env python
"""Data path speed: JPEG files on disk -> images/s, alone and feeding our training step.

Measures, in one process, on one folder of real JPEGs:

(a) ``loader PIL``: the published loader path, ``MultiLabelImageDataset`` (PIL decode) + the
    published train transform (bicubic resize to the scale size, random square crop, bicubic
    resize, flip, normalise) in N <= 8 DataLoader processes, batches copied to the device;
(b) ``loader device``: our default pipeline on CUDA, ``EncodedImageDataset`` (the workers only read
    the file bytes) + ``DeviceTrainTransform`` (nvJPEG decode and the same augmentations on the
    GPU), through the engine's ``Loaders.to_input``;
(c) ``end to end``: our default training step (``bench/common.py``: fast LGC, bf16, channels_last,
    fused Adam, fused MixUp pass, EMA) fed by (a) and by (b), against the same step on a synthetic
    batch already on the device. Target: within 15% of the synthetic rate;
(d) ``eval``: evaluation images/s, the regular and the EMA model scored in one pass over the data
    by the engine's ``predict`` (``DeviceTestTransform`` on CUDA), and the published evaluation
    (PIL test transform, fp16, literal branch, both models, ``.cpu()`` per batch) for reference.

The JPEGs are built offline (``--data`` takes an existing folder instead): COCO-like sizes
(640x480, 480x640, 640x427, ...; 1% greyscale), quality 90 with 4:2:0 chroma, composed from the
photos bundled with scikit-image (a random crop of one photo as background plus 1-4 pasted crops
of others), so decoding and resizing cost what real photos cost. Labels are random (80 classes,
~2.9 positives per image, 10% kept): speed does not depend on them. Files are read through the
page cache (a second epoch on a machine that holds the dataset in RAM).

    python bench/bench_data.py                  # CUDA: 448 px, batch 35, 8 loader processes
    python bench/bench_data.py --device cpu     # CPU: 128 px, batch 4 (about a minute)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from pu_mlc.engine.prefetch import DevicePrefetcher  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, RandomSampler  # noqa: E402

from pu_mlc.data import (  # noqa: E402
    DeviceTestTransform,
    DeviceTrainTransform,
    EncodedImageDataset,
    MultiLabelImageDataset,
    Split,
    encoded_collate,
    partial_labels,
    test_transform,
    train_transform,
)
from pu_mlc.engine.data_setup import Loaders  # noqa: E402
from pu_mlc.engine.distributed import DistContext  # noqa: E402
from pu_mlc.engine.evaluate import EvalTarget, predict  # noqa: E402
from pu_mlc.metrics import ShardedEvalSampler  # noqa: E402

#: (width, height, weight): the most common COCO-2014 image sizes, roughly in proportion.
COCO_SIZES = ((640, 480, 40), (480, 640, 12), (640, 427, 16), (427, 640, 4), (640, 426, 5),
              (640, 428, 4), (640, 425, 4), (500, 375, 3), (640, 360, 3), (612, 612, 3),
              (640, 640, 2), (375, 500, 2), (640, 512, 2))
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
          "brick", "grass", "gravel", "camera", "coins")
DEFAULTS = {"cuda": dict(size=448, batch=35, images=1000, warmup_batches=8, batches=60,
                         eval_images=1000),
            "cpu": dict(size=128, batch=4, images=48, warmup_batches=1, batches=3,
                        eval_images=16)}


# ------------------------------------------------------------------------------------------------
# the JPEG folder
def load_photos() -> list[np.ndarray]:
    import skimage.data

    photos = []
    for name in PHOTOS:
        try:
            arr = np.asarray(getattr(skimage.data, name)())
        except Exception:        # a photo that must be downloaded: skip it (we are offline)
            continue
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        photos.append(np.ascontiguousarray(arr[..., :3], dtype=np.uint8))
    if not photos:
        raise SystemExit("no scikit-image photos available to build JPEGs; pass --data DIR")
    return photos


def _crop(rng: np.random.Generator, photo: np.ndarray, aspect: float) -> Image.Image:
    h, w = photo.shape[:2]
    ch = int(rng.integers(max(16, h // 3), h + 1))
    cw = min(w, max(16, int(round(ch * aspect))))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    img = Image.fromarray(photo[top:top + ch, left:left + cw])
    return img.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else img


def compose(i: int, seed: int, photos: list[np.ndarray], grey_fraction: float) -> Image.Image:
    rng = np.random.default_rng([seed, i])
    sizes = np.array([s[2] for s in COCO_SIZES], dtype=np.float64)
    w, h, _ = COCO_SIZES[int(rng.choice(len(COCO_SIZES), p=sizes / sizes.sum()))]
    canvas = _crop(rng, photos[int(rng.integers(len(photos)))], w / h).resize((w, h),
                                                                              Image.BILINEAR)
    for _ in range(int(rng.integers(1, 5))):
        side = int(rng.integers(min(w, h) // 6, min(w, h) // 2 + 1))
        item = _crop(rng, photos[int(rng.integers(len(photos)))], rng.uniform(0.6, 1.6))
        item = item.resize((side, max(8, int(side * item.height / item.width))), Image.BILINEAR)
        canvas.paste(item, (int(rng.integers(0, w - side + 1)),
                            int(rng.integers(0, max(1, h - item.height + 1)))))
    return canvas.convert("L") if rng.random() < grey_fraction else canvas


def build_jpegs(out_dir: Path, n: int, seed: int, grey_fraction: float = 0.01) -> list[str]:
    """Write ``n`` JPEGs into ``out_dir`` (kept if they exist); return their names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [f"img_{i:06d}.jpg" for i in range(n)]
    todo = [i for i, name in enumerate(names) if not (out_dir / name).exists()]
    if todo:
        photos = load_photos()

        def write(i: int) -> None:
            img = compose(i, seed, photos, grey_fraction)
            tmp = out_dir / f".{names[i]}.tmp"
            img.save(tmp, format="JPEG", quality=90, subsampling=2, optimize=False)
            tmp.replace(out_dir / names[i])

        with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
            list(pool.map(write, todo))
    return names


def find_jpegs(folder: Path, limit: int) -> list[str]:
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                   if p.suffix.lower() in (".jpg", ".jpeg"))
    if not files:
        raise SystemExit(f"--data {folder}: no .jpg files found")
    return files[:limit]


def make_split(folder: Path, files: list[str], classes: int, seed: int) -> tuple[Split, np.ndarray]:
    full = common.synthetic_labels(len(files), classes, seed)
    names = tuple(f"class_{c}" for c in range(classes))
    split = Split("train", folder, tuple(files), full, names, f"bench JPEGs in {folder}")
    return split, partial_labels(full, common.LABEL_PROB, seed=0)


# ------------------------------------------------------------------------------------------------
# measuring
def run_loader(loader: DataLoader, consume: Callable, device: torch.device, warmup: int,
               timed: int) -> dict:
    """Consume ``warmup`` + ``timed`` batches; the rate counts the timed ones only.

    ``wait_s`` is the time the consumer spent waiting for the loader (as ``fit`` reports it).
    """
    it = iter(loader)
    images = 0
    wait = 0.0
    t_start = time.perf_counter()
    for i in range(warmup + timed):
        if i == warmup:
            common.sync(device)
            t_start = time.perf_counter()
            wait = 0.0
            images = 0
        t0 = time.perf_counter()
        batch = next(it)
        wait += time.perf_counter() - t0
        consume(batch)
        images += len(batch[1])
    common.sync(device)
    seconds = time.perf_counter() - t_start
    del it
    return {"images": images, "seconds": seconds, "images_per_s": images / max(seconds, 1e-12),
            "ms_per_batch": 1000.0 * seconds / max(timed, 1), "wait_s": wait,
            "wait_fraction": wait / max(seconds, 1e-12)}


def train_loader(dataset, batch: int, batches: int, workers: int, device: torch.device,
                 collate=None, seed: int = 0) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(dataset, replacement=True, num_samples=batches * batch, generator=gen)
    return DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                      pin_memory=device.type == "cuda", collate_fn=collate, drop_last=True)


def eval_loader(dataset, batch: int, workers: int, device: torch.device,
                collate=None) -> DataLoader:
    return DataLoader(dataset, batch_size=batch, sampler=ShardedEvalSampler(len(dataset), 0, 1),
                      num_workers=workers, pin_memory=device.type == "cuda", collate_fn=collate)


@torch.no_grad()
def published_eval(model, ema_model, loader: DataLoader, device: torch.device,
                   precision) -> int:
    """ASL's ``validate_multi``: both models on each batch, sigmoid, ``.cpu()`` per batch."""
    model.eval()
    ema_model.eval()
    n = 0
    regular, ema = [], []
    for x, _, _ in loader:
        x = x.to(device)
        with precision.autocast():
            regular.append(torch.sigmoid(model(x)).cpu())
            ema.append(torch.sigmoid(ema_model(x)).cpu())
        n += x.shape[0]
    model.train()
    return n


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    common.sync(device)
    t0 = time.perf_counter()
    out = fn()
    common.sync(device)
    return time.perf_counter() - t0, out


# ------------------------------------------------------------------------------------------------
def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--data", help="existing folder of JPEGs (default: build them)")
    p.add_argument("--build-dir", help="where to build the JPEGs (default: a temporary folder)")
    p.add_argument("--images", type=int, help="JPEGs to build/use (CUDA 1000, CPU 48)")
    p.add_argument("--size", type=int, help="crop size (CUDA 448, CPU 128)")
    p.add_argument("--scale", type=int, help="scale size (default size * 512 / 448)")
    p.add_argument("--batch", type=int, help="images per step (CUDA 35, CPU 4)")
    p.add_argument("--classes", type=int, default=80)
    p.add_argument("--workers", type=int,
                   help="loader processes (default min(8, CPU count - 1), at most 8)")
    p.add_argument("--warmup-batches", type=int)
    p.add_argument("--batches", type=int, help="timed batches per measurement")
    p.add_argument("--eval-images", type=int)
    p.add_argument("--model", default="resnet101")
    p.add_argument("--precision", default="auto", help="our path's precision")
    p.add_argument("--steps", type=int, help="timed synthetic steps (default: --batches)")
    p.add_argument("--no-published-eval", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int,
                   help="torch CPU threads (default: torch's choice; 1 is steadier on a busy CPU)")
    p.add_argument("--json")
    p.add_argument("--markdown")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = get_args(argv)
    device = common.resolve_device_args(args, DEFAULTS)
    args.scale = args.scale or int(round(args.size * 512 / 448))
    if args.workers is None:
        args.workers = min(8, max(1, (os.cpu_count() or 2) - 1))
    if args.workers > 8:
        print(f"note: --workers {args.workers} is above the 8 loader processes the target allows")
    args.steps = args.steps or args.batches
    env = common.environment(device)
    print(f"# PU-MLC data path: JPEG files -> step ({env.get('gpu', env.get('cpu'))}, torch "
          f"{torch.__version__})")

    tmp = None
    t0 = time.perf_counter()
    if args.data:
        folder = Path(args.data)
        files = find_jpegs(folder, args.images)
    else:
        if args.build_dir:
            folder = Path(args.build_dir)
        else:
            tmp = tempfile.TemporaryDirectory(prefix="pumlc_jpegs_")
            folder = Path(tmp.name)
        files = build_jpegs(folder, args.images, args.seed)
    build_s = time.perf_counter() - t0
    sizes = [os.path.getsize(folder / f) for f in files]
    print(f"{len(files)} JPEGs in {folder} (built/found in {build_s:.1f} s, mean "
          f"{np.mean(sizes) / 1024:.0f} KiB); crop {args.size}, scale {args.scale}, batch "
          f"{args.batch}, {args.workers} loader process(es), {args.warmup_batches} warm-up + "
          f"{args.batches} timed batches", flush=True)
    split, targets = make_split(folder, files, args.classes, args.seed)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    n_batches = args.warmup_batches + args.batches
    results: dict[str, dict] = {}
    errors: dict[str, str] = {}

    def attempt(key: str, label: str, fn: Callable[[], dict]) -> Optional[dict]:
        """Run one measurement; a failure (OOM, loader crash) is recorded, the others go on."""
        try:
            res = fn()
        except Exception as e:
            import traceback
            traceback.print_exc()
            errors[key] = repr(e)
            print(f"  {label}: FAILED ({e!r})", flush=True)
            return None
        results[key] = dict(res, label=label)
        print(f"  {label}: {res['images_per_s']:.1f} images/s"
              + (f" ({res['wait_fraction'] * 100:.0f}% of the time waiting for the loader)"
                 if "wait_fraction" in res else ""), flush=True)
        return res

    # (a), (b): loaders alone -------------------------------------------------------------------
    pil_ds = MultiLabelImageDataset(split, targets, train_transform(args.scale, args.size,
                                                                    mean, std))
    enc_ds = EncodedImageDataset(split, targets)
    dev_train = DeviceTrainTransform(args.scale, args.size, mean, std, seed=args.seed)
    dev_eval = DeviceTestTransform(args.size, mean, std)
    loaders = Loaders(train=None, train_sampler=None, test=None, val=None,  # type: ignore[arg-type]
                      device_transform_train=dev_train, device_transform_eval=dev_eval)

    attempt("loader_pil", "loader alone, PIL decode + published transform in workers",
            lambda: run_loader(train_loader(pil_ds, args.batch, n_batches, args.workers, device),
                               lambda b: b[0].to(device, non_blocking=True), device,
                               args.warmup_batches, args.batches))
    attempt("loader_device", f"loader alone, bytes in workers + decode/augment on {device.type}",
            lambda: run_loader(train_loader(enc_ds, args.batch, n_batches, args.workers, device,
                                            encoded_collate),
                               lambda b: loaders.to_input(b, device, train=True), device,
                               args.warmup_batches, args.batches))

    # (c): end to end vs synthetic --------------------------------------------------------------
    t0 = time.perf_counter()
    master = common.build_master(args.model, args.classes, lgc=True, seed=args.seed,
                                 calib_size=min(args.size, 224))
    print(f"  (model built in {time.perf_counter() - t0:.1f} s)", flush=True)
    spec = common.ours_spec(device, args.precision)
    x, tgt = common.synthetic_batch(args.batch, args.size, args.classes, args.seed)
    trainer = common.Trainer(master, spec, device, seed=args.seed)
    precision = trainer.precision

    def synthetic() -> dict:
        with common.MemoryMeter(device) as meter:
            res = common.timed_steps(trainer, x, tgt, warmup=args.warmup_batches,
                                     steps=args.steps)
        res.update(meter.result())
        return res

    synth = attempt("step_synthetic", "our step, synthetic batch on the device", synthetic)

    def end_to_end(ds, collate, to_input, prefetch: bool = False) -> dict:
        def to_device(b):
            return to_input(b), b[1].to(device, non_blocking=True)

        loader = train_loader(ds, args.batch, n_batches, args.workers, device, collate,
                              seed=args.seed + 1)
        if prefetch:       # what fit does for the device pipeline: the next batch decodes ahead
            loader = DevicePrefetcher(loader, to_device, device)
            consume = lambda xb: trainer.step(*xb)  # noqa: E731
        else:
            consume = lambda b: trainer.step(*to_device(b))  # noqa: E731
        with common.MemoryMeter(device) as meter:
            res = run_loader(loader, consume, device, args.warmup_batches, args.batches)
        res.update(meter.result())
        res["vs_synthetic"] = res["images_per_s"] / synth["images_per_s"] if synth else None
        return res

    attempt("e2e_device", "our step fed by the device pipeline (our default on CUDA)",
            lambda: end_to_end(enc_ds, encoded_collate,
                               lambda b: loaders.to_input(b, device, train=True),
                               prefetch=True))
    attempt("e2e_pil", "our step fed by the PIL loader",
            lambda: end_to_end(pil_ds, None, lambda b: b[0]))

    # (d): evaluation -----------------------------------------------------------------------------
    eval_split = split.subset(np.arange(min(args.eval_images, len(split))))
    eval_bs = 2 * args.batch                     # the engine's default eval batch size
    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=device)
    pipeline = "tensor" if device.type == "cuda" else "pil"   # what fit picks ('auto')

    def engine_eval(sub: Split) -> int:
        if pipeline == "tensor":
            ds = EncodedImageDataset(sub, sub.labels)
            loader = eval_loader(ds, eval_bs, args.workers, device, encoded_collate)
        else:
            ds = MultiLabelImageDataset(sub, sub.labels, test_transform(args.size, mean, std))
            loader = eval_loader(ds, eval_bs, args.workers, device)
        target = EvalTarget("test", loader, sub.labels == 1, None, sub.class_names)
        scores = predict({"regular": trainer.model, "ema": trainer.ema_model()}, target, ctx,
                         precision, lambda b: loaders.to_input(b, device, train=False))
        trainer.model.train()
        return len(scores["regular"])

    def eval_ours() -> dict:
        engine_eval(eval_split.subset(np.arange(min(2 * eval_bs, len(eval_split)))))  # warm-up
        seconds, n = timed(lambda: engine_eval(eval_split), device)
        return {"images": n, "seconds": seconds, "images_per_s": n / seconds}

    attempt("eval_ours", f"eval, ours (regular + EMA in one pass, {precision.name}, "
                         f"{'device' if pipeline == 'tensor' else 'PIL'} decode, batch {eval_bs})",
            eval_ours)
    trainer.close()                  # frees its model, optimizer and EMA

    def eval_published() -> dict:
        pub = common.Trainer(master, common.published_spec(device), device, seed=args.seed)
        tf = test_transform(args.size, mean, std)
        n_warm = min(2 * args.batch, len(eval_split))
        warm = MultiLabelImageDataset(eval_split.subset(np.arange(n_warm)),
                                      eval_split.labels[:n_warm], tf)
        published_eval(pub.model, pub.ema_model(),
                       eval_loader(warm, args.batch, args.workers, device), device,
                       pub.precision)
        ds = MultiLabelImageDataset(eval_split, eval_split.labels, tf)
        seconds, n = timed(lambda: published_eval(
            pub.model, pub.ema_model(), eval_loader(ds, args.batch, args.workers, device),
            device, pub.precision), device)
        pub.close()
        return {"images": n, "seconds": seconds, "images_per_s": n / seconds}

    if not args.no_published_eval:
        attempt("eval_published", f"eval, published (regular + EMA, "
                                  f"{common.published_spec(device).precision}, literal, PIL "
                                  f"decode, batch {args.batch})", eval_published)

    table = render(results, synth)
    print()
    print(table)
    summary = {"target": 0.85}
    for key in ("e2e_device", "e2e_pil"):
        summary[f"{key}_vs_synthetic"] = results.get(key, {}).get("vs_synthetic")
    if "eval_ours" in results and "eval_published" in results:
        summary["eval_ratio"] = (results["eval_ours"]["images_per_s"]
                                 / results["eval_published"]["images_per_s"])
    print(f"\nend to end / synthetic step: device pipeline "
          f"{common.fmt(summary['e2e_device_vs_synthetic'], 2)}, PIL loader "
          f"{common.fmt(summary['e2e_pil_vs_synthetic'], 2)} (target >= 0.85 for the default "
          f"pipeline: the device one on CUDA)")
    payload = {"benchmark": "bench_data", "command": " ".join([sys.executable] + sys.argv),
               "environment": env,
               "problem": {"model": args.model, "size": args.size, "scale": args.scale,
                           "batch": args.batch, "classes": args.classes,
                           "workers": args.workers, "images": len(files),
                           "mean_jpeg_kib": float(np.mean(sizes) / 1024),
                           "warmup_batches": args.warmup_batches, "batches": args.batches,
                           "eval_images": len(eval_split), "precision": precision.name},
               "results": results, "errors": errors, "summary": summary, "table": table}
    common.write_json(args.json, payload)
    common.write_text(args.markdown, table + "\n")
    if tmp is not None:
        tmp.cleanup()
    if errors:
        print(f"ERROR: {len(errors)} measurement(s) failed: {sorted(errors)}", file=sys.stderr)
        return 5
    return 0


def render(results: dict, synth: Optional[dict]) -> str:
    rows = []
    for key, r in results.items():
        rows.append([key, r["label"], common.fmt(r["images_per_s"]),
                     common.fmt(r.get("ms_per_batch", r.get("ms_per_step"))),
                     (f"{r['wait_fraction'] * 100:.0f}%" if "wait_fraction" in r else ""),
                     common.fmt(r.get("peak_gib"), 2),
                     (f"{r['images_per_s'] / synth['images_per_s']:.2f}"
                      if synth and key.startswith(("e2e", "loader")) else "")])
    return common.markdown_table(["measure", "what", "images/s", "ms/batch", "waiting for data",
                                  "peak GiB", "vs synthetic step"], rows)


if __name__ == "__main__":
    sys.exit(main())
