#!/usr/bin/env python
"""Where our default training step makes the host wait for the GPU (CUDA only).

A host synchronisation inside the step (``.item()``, a blocking host-to-device copy, indexing a
CUDA tensor with a Python list) stops the CPU from queueing the next kernels while the GPU works,
so the GPU idles while Python runs. This runs a few steps of our default step (synthetic input),
the device train/test transforms on real JPEG bytes, and one step fed by the device pipeline,
under ``torch.cuda.set_sync_debug_mode('warn')``, and lists every synchronising call site in
``pu_mlc`` (file:line, count per step), with the innermost ``pu_mlc``/``bench`` frame.

    python bench/sync_audit.py [--json PATH]
"""

from __future__ import annotations

import argparse
import io
import sys
import traceback
import warnings
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import torch  # noqa: E402

REPO = common.REPO


def site_of(stack: list[traceback.FrameSummary]) -> str:
    """Innermost frame in this repository (pu_mlc first, then bench), as path:line (function)."""
    for prefix in ("pu_mlc", "bench"):
        for fr in reversed(stack):
            try:
                rel = Path(fr.filename).resolve().relative_to(REPO)
            except ValueError:
                continue
            if rel.parts and rel.parts[0] == prefix and rel.name != "sync_audit.py":
                return f"{rel}:{fr.lineno} ({fr.name}: {(fr.line or '').strip()[:70]})"
    return "outside the repository"


class Recorder:
    """Counts synchronising CUDA calls by call site while active."""

    def __init__(self):
        self.sites: Counter = Counter()
        self._guard = None

    def __enter__(self):
        self.sites.clear()
        self._guard = warnings.catch_warnings()     # restores filters and showwarning on exit
        self._guard.__enter__()
        warnings.simplefilter("always")

        def show(message, category, filename, lineno, file=None, line=None):
            if "synchroniz" in str(message):
                self.sites[site_of(traceback.extract_stack()[:-1])] += 1
        warnings.showwarning = show
        torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc):
        torch.cuda.set_sync_debug_mode("default")
        self._guard.__exit__(*exc)


def jpeg_bytes(n: int, seed: int) -> list[torch.Tensor]:
    from bench_data import compose, load_photos
    photos = load_photos()
    out = []
    for i in range(n):
        buf = io.BytesIO()
        compose(i, seed, photos, 0.0).save(buf, format="JPEG", quality=90, subsampling=2)
        out.append(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=448)
    p.add_argument("--batch", type=int, default=35)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--json")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("sync_audit: needs CUDA (torch.cuda.set_sync_debug_mode)", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    from pu_mlc.data import DeviceTestTransform, DeviceTrainTransform

    master = common.build_master("resnet101", 80, lgc=True, seed=0, calib_size=224)
    trainer = common.Trainer(master, common.ours_spec(device), device)
    x, targets = common.synthetic_batch(args.batch, args.size, 80, 0)
    targets = targets.to(device)
    xd = x.to(device)
    encoded = jpeg_bytes(args.batch, 0)
    scale = int(round(args.size * 512 / 448))
    train_tf = DeviceTrainTransform(scale, args.size, seed=0)
    test_tf = DeviceTestTransform(args.size)
    for _ in range(2):                                  # warm-up, not audited
        trainer.step(xd, targets)
        train_tf(encoded, device)
    torch.cuda.synchronize()

    report = {}
    with Recorder() as rec:
        for _ in range(args.steps):
            trainer.step(xd, targets)
    report["step (synthetic input)"] = {k: v / args.steps for k, v in rec.sites.items()}
    with Recorder() as rec:
        trainer.step(train_tf(encoded, device), targets)
    report["step fed by DeviceTrainTransform"] = dict(rec.sites)
    with Recorder() as rec:
        test_tf(encoded, device)
    report["DeviceTestTransform (one batch)"] = dict(rec.sites)
    torch.cuda.synchronize()

    print("# host synchronisations per call (torch.cuda.set_sync_debug_mode('warn'))")
    for section, sites in report.items():
        total = sum(sites.values())
        print(f"\n{section}: {total:g} sync(s)")
        for site, n in sorted(sites.items(), key=lambda kv: -kv[1]):
            print(f"  {n:5g}  {site}")
    common.write_json(args.json, {"benchmark": "sync_audit", "environment":
                                  common.environment(device), "sections": report})
    return 0


if __name__ == "__main__":
    sys.exit(main())
