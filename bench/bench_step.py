#!/usr/bin/env python
"""Training-step speed: the published PU-MLC step vs our default step, side by side in one process.

Every path copies the same seeded network and trains on the same input batch (same MixUp draws,
same number of optimizer steps); see ``bench/common.py`` for what each path does. Prints a markdown
table (images/s, ms/step, peak memory, ratio to the published step) and an fp32 sanity line: the
first-step losses of both formulations, computed in fp32 with TF32 off, must agree to rounding.

    python bench/bench_step.py                        # CUDA: 448 px, batch 35, 80 classes
    python bench/bench_step.py --device cpu           # CPU: 128 px, batch 4 (about 1-2 minutes)
    python bench/bench_step.py --compile --compile-second-process   # + torch.compile rows

"images" are the real images of a batch (the MixUp images are not counted), the same for all paths.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import torch  # noqa: E402

PATHS = ("published_nolgc", "published", "ours", "ours_compiled")
DEFAULTS = {"cuda": dict(size=448, batch=35, steps=20, warmup=5),
            "cpu": dict(size=128, batch=4, steps=3, warmup=1)}


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("problem")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--model", default="resnet101", help="backbone (default resnet101)")
    g.add_argument("--size", type=int, help="input side (CUDA 448, CPU 128)")
    g.add_argument("--batch", type=int, help="images per step (CUDA 35, CPU 4)")
    g.add_argument("--classes", type=int, default=80)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=int,
                   help="torch CPU threads (default: torch's choice; 1 is steadier on a busy CPU)")
    g = p.add_argument_group("measurement")
    g.add_argument("--steps", type=int, help="timed steps per path (CUDA 20, CPU 3)")
    g.add_argument("--warmup", type=int, help="untimed steps first (CUDA 5, CPU 1)")
    g.add_argument("--paths", default="published_nolgc,published,ours",
                   help=f"comma-separated rows, from {', '.join(PATHS)}")
    g.add_argument("--precision", default="auto",
                   help="our path's precision: auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp16 | fp32")
    g.add_argument("--cudnn-benchmark", action="store_true",
                   help="torch.backends.cudnn.benchmark = True for every path (default off, as fit)")
    g.add_argument("--no-parity", action="store_true", help="skip the first-step loss check")
    g.add_argument("--parity-batch", type=int,
                   help="images of the batch used by the loss check (CUDA 8, CPU all)")
    g = p.add_argument_group("torch.compile (optional)")
    g.add_argument("--compile", action="store_true", help="add the ours_compiled row")
    g.add_argument("--compile-cache", help="TORCHINDUCTOR_CACHE_DIR (default: a new, cold one)")
    g.add_argument("--compile-second-process", action="store_true",
                   help="then time the compile of a second process on the now-warm cache "
                        "(what the next trial of a search pays)")
    g = p.add_argument_group("output")
    g.add_argument("--json", help="write the results here")
    g.add_argument("--markdown", help="write the table here")
    args = p.parse_args(argv)
    args.paths = [s.strip() for s in args.paths.split(",") if s.strip()]
    if args.compile and "ours_compiled" not in args.paths:
        args.paths.append("ours_compiled")
    bad = [s for s in args.paths if s not in PATHS]
    if bad:
        p.error(f"--paths: unknown {bad}; choose from {', '.join(PATHS)}")
    return args


def main(argv=None) -> int:
    args = get_args(argv)
    device = common.resolve_device_args(args, DEFAULTS)
    if "ours_compiled" in args.paths:
        if not args.compile_cache:
            args.compile_cache = tempfile.mkdtemp(prefix="pumlc_inductor_")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = args.compile_cache
    torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)

    env = common.environment(device)
    print(f"# PU-MLC training step: published vs ours ({env.get('gpu', env.get('cpu'))}, "
          f"torch {torch.__version__})")
    print(f"{args.model}, {args.size} px, batch {args.batch}, {args.classes} classes, "
          f"{args.warmup} warm-up + {args.steps} timed steps per path; random init with "
          f"calibrated BN statistics (speed does not depend on weight values), random 300-d "
          f"word vectors, 10% partial labels", flush=True)

    t0 = time.perf_counter()
    x, targets = common.synthetic_batch(args.batch, args.size, args.classes, args.seed)
    calib = min(args.size, 224)
    masters = {}
    if any(p != "published_nolgc" for p in args.paths):
        masters[True] = common.build_master(args.model, args.classes, lgc=True, seed=args.seed,
                                            calib_size=calib)
    if "published_nolgc" in args.paths:
        masters[False] = common.build_master(args.model, args.classes, lgc=False,
                                             seed=args.seed, calib_size=calib)
    build_s = time.perf_counter() - t0

    parity = None
    if not args.no_parity and True in masters:
        n = args.parity_batch or (min(args.batch, 8) if device.type == "cuda" else args.batch)
        parity = common.loss_parity(masters[True], x[:n], targets[:n], device, seed=args.seed)
        f32, f64 = parity["fp32"], parity["fp64"]
        print(f"sanity (first {n} images of the batch, same weights and MixUp draw): first-step "
              f"loss published vs ours: fp32 (TF32 off) {f32['published_loss']:.6f} vs "
              f"{f32['ours_loss']:.6f}, rel diff {f32['rel_diff']['loss']:.1e} (fp32 rounding "
              f"of this net {f32['fp32_rounding_vs_fp64']['loss']:.1e}); fp64 rel diff "
              f"{f64['rel_diff']['loss']:.1e} -> {'OK' if parity['ok'] else 'MISMATCH'}",
              flush=True)

    rows, failed = [], []
    for name in args.paths:
        if name == "published_nolgc":
            spec = common.published_spec(device, lgc=False)
        elif name == "published":
            spec = common.published_spec(device)
        else:
            spec = common.ours_spec(device, args.precision, compile=name == "ours_compiled")
        try:
            meter = common.MemoryMeter(device)
            with meter:
                trainer = common.Trainer(masters[spec.lgc], spec, device, seed=args.seed)
                res = common.timed_steps(trainer, x, targets, warmup=args.warmup,
                                         steps=args.steps)
                trainer.close()
                del trainer
        except Exception as e:       # an OOM or a compile failure must not hide the other rows
            import traceback
            traceback.print_exc()
            failed.append({"name": name, "spec": spec.describe(), "error": repr(e)})
            print(f"  {name}: FAILED ({e!r})", flush=True)
            common.free_memory()
            continue
        res.update(meter.result())
        res.update(name=name, spec=spec.describe())
        if spec.compile:
            # the first step compiles forward and backward; later warm-up steps run compiled
            res["compile_s"] = (res["first_step_s"] - res["ms_per_step"] / 1000.0
                                if res["first_step_s"] is not None else None)
            res["compile_cache"] = args.compile_cache
        rows.append(res)
        print(f"  {name}: {res['images_per_s']:.1f} images/s, {res['ms_per_step']:.1f} ms/step, "
              f"peak {common.fmt(res['peak_gib'], 2)} GiB, first loss {res['first_loss']:.4f}"
              + (f", compile {common.fmt(res['compile_s'])} s" if spec.compile else ""),
              flush=True)

    if args.compile_second_process and any(r["spec"]["compile"] for r in rows):
        second = compile_in_second_process(args)
        for r in rows:
            if r["spec"]["compile"]:
                r["compile_s_warm_cache"] = second

    by_name = {r["name"]: r for r in rows}
    pub = by_name.get("published")
    for r in rows:
        r["speedup_vs_published"] = (r["images_per_s"] / pub["images_per_s"]) if pub else None
        r["memory_vs_published"] = ((r["peak_gib"] / pub["peak_gib"])
                                    if pub and pub.get("peak_gib") and r.get("peak_gib") is not None
                                    else None)

    table = render(rows, device)
    print()
    print(table)
    summary = {}
    if pub and "ours" in by_name:
        ours = by_name["ours"]
        summary = {"ratio_images_per_s": ours["speedup_vs_published"],
                   "ratio_peak_memory": ours["memory_vs_published"],
                   "target_ratio": 3.0, "stretch_ratio": 4.0}
        mem = (f", peak memory {ours['memory_vs_published']:.2f}x"
               if ours["memory_vs_published"] is not None else "")
        print(f"\nratio ours/published: {ours['speedup_vs_published']:.2f}x images/s{mem}"
              + ("" if device.type == "cuda" else
                 "  (CPU, both fp32: a smoke value; the acceptance target is on an H100)"))
    if pub and pub["spec"]["precision"] == "fp16":
        print(f"published fp16 GradScaler scale after the run: {pub.get('grad_scale')} "
              f"(65536 = no step skipped by overflow)")
    payload = {"benchmark": "bench_step", "command": " ".join([sys.executable] + sys.argv),
               "environment": env,
               "problem": {"model": args.model, "size": args.size, "batch": args.batch,
                           "classes": args.classes, "steps": args.steps, "warmup": args.warmup,
                           "seed": args.seed, "cudnn_benchmark": bool(args.cudnn_benchmark)},
               "build_seconds": build_s, "loss_parity": parity, "rows": rows,
               "summary": summary, "failed": failed, "table": table}
    common.write_json(args.json, payload)
    common.write_text(args.markdown, table + "\n")
    if parity is not None and not parity["ok"]:
        print("ERROR: the two formulations disagree (fp32/fp64 loss check); the comparison "
              "is not valid",
              file=sys.stderr)
        return 3
    if failed:
        print(f"ERROR: {len(failed)} path(s) failed: {[f['name'] for f in failed]}",
              file=sys.stderr)
        return 5
    if not all(r["finite"] for r in rows):
        print("ERROR: a path produced a non-finite loss", file=sys.stderr)
        return 4
    return 0


def render(rows: list[dict], device: torch.device) -> str:
    mem_head = "peak GiB (CUDA alloc)" if device.type == "cuda" else "peak GiB (RSS delta)"
    headers = ["path", "LGC", "precision", "layout", "Adam", "passes", "EMA", "images/s",
               "ms/step", mem_head, "speed vs published", "memory vs published"]
    out = []
    for r in rows:
        s = r["spec"]
        lgc = s["lgc_impl"] if s["lgc"] else "none"
        prec = s["precision"] + (" + GradScaler" if s["precision"] == "fp16" else "")
        name = r["name"] + (f" (compile {common.fmt(r['compile_s'], 0)} s"
                            + (f", warm cache {common.fmt(r['compile_s_warm_cache'], 0)} s"
                               if r.get("compile_s_warm_cache") is not None else "") + ")"
                            if s["compile"] else "")
        out.append([name, lgc, prec, "channels_last" if s["channels_last"] else "NCHW",
                    {"single": "foreach=False", "fused": "fused", "default": "default"}[s["adam"]],
                    "1 fused" if s["fused_step"] else "2", "ASL loop" if s["ema"] == "asl"
                    else "trainable lerp", common.fmt(r["images_per_s"]), common.fmt(r["ms_per_step"]),
                    common.fmt(r["peak_gib"], 2),
                    (f"{r['speedup_vs_published']:.2f}x" if r["speedup_vs_published"] else "n/a"),
                    (f"{r['memory_vs_published']:.2f}x" if r["memory_vs_published"] else "n/a")])
    return common.markdown_table(headers, out)


def compile_in_second_process(args) -> float | None:
    """Compile time of a fresh process with the cache the first one filled (a second trial)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "second.json"
        cmd = [sys.executable, __file__, "--device", args.device, "--model", args.model,
               "--size", str(args.size), "--batch", str(args.batch), "--classes",
               str(args.classes), "--steps", "3", "--warmup", "2", "--paths", "ours_compiled",
               "--precision", args.precision, "--compile-cache", args.compile_cache,
               "--no-parity", "--json", str(out)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        print(f"compiling again in a second process on the warm cache {args.compile_cache} ...",
              flush=True)
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0 or not out.exists():
            print(f"second process failed (rc {res.returncode}):\n{res.stderr[-2000:]}",
                  file=sys.stderr)
            return None
        import json
        row = json.loads(out.read_text())["rows"][0]
        print(f"  second process: compile {row['compile_s']:.1f} s on the warm cache", flush=True)
        return row["compile_s"]


if __name__ == "__main__":
    sys.exit(main())
