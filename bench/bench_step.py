#!/usr/bin/env python
"""Training-step speed: the published PU-MLC step vs our default step, side by side in one process.

Every path copies the same seeded network and trains on the same input batch (same MixUp draws,
same number of optimizer steps); see ``bench/common.py`` for what each path does. Prints a markdown
table (images/s, ms/step with its spread, peak memory, ratio to the published step), the ratio
ours/published with its spread, and an fp32 sanity line: the first-step losses of both
formulations, computed in fp32 with TF32 off, must agree to rounding.

Timing is interleaved, so that a change of the machine's load cannot decide the ratio: every path
is built and warmed up first, then the timed steps run in rounds, each round one block of
``--block`` steps of every path, the order rotated from round to round (A B, B A, ... with two
paths). Each path reports the median and spread of its per-step time over the blocks, and each
round gives one ratio per path (published's block time / the path's), so the ratio is the median
of those paired ratios, with their IQR, range and a bootstrap interval of the median.

    python bench/bench_step.py                        # CUDA: 448 px, batch 35, 80 classes
    python bench/bench_step.py --device cpu           # CPU: 128 px, batch 4 (about 1 minute)
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
import numpy as np  # noqa: E402
import torch  # noqa: E402

PATHS = ("published_nolgc", "published", "ours", "ours_compiled")
DEFAULTS = {"cuda": dict(size=448, batch=35, steps=40, warmup=5, block=4),
            "cpu": dict(size=128, batch=4, steps=6, warmup=1, block=1)}
BOOTSTRAP = 2000            # resamples of the paired ratios for the interval of their median


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
    g.add_argument("--steps", type=int,
                   help="timed steps per path (CUDA 40, CPU 6), rounded up to a multiple of "
                        "--block")
    g.add_argument("--block", type=int,
                   help="steps of one path timed together before the next path's turn (CUDA 4: "
                        "one synchronisation per block; CPU 1: ABAB... per step)")
    g.add_argument("--warmup", type=int, help="untimed steps first, per path (CUDA 5, CPU 1)")
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
    if args.steps < 1 or args.block < 1 or args.warmup < 0:
        raise SystemExit("--steps and --block must be >= 1, --warmup >= 0")
    rounds = -(-args.steps // args.block)           # ceil: every round times one whole block
    args.steps = rounds * args.block
    if "ours_compiled" in args.paths:
        if not args.compile_cache:
            args.compile_cache = tempfile.mkdtemp(prefix="pumlc_inductor_")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = args.compile_cache
    torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)

    env = common.environment(device)
    print(f"# PU-MLC training step: published vs ours ({env.get('gpu', env.get('cpu'))}, "
          f"torch {torch.__version__})")
    print(f"{args.model}, {args.size} px, batch {args.batch}, {args.classes} classes, "
          f"{args.warmup} warm-up + {args.steps} timed steps per path, interleaved: {rounds} "
          f"round(s) of one {args.block}-step block per path, order rotated each round; "
          f"random init with "
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

    rows, failed = measure(args, masters, x, targets, device, rounds)

    if args.compile_second_process and any(r["spec"]["compile"] for r in rows):
        second = compile_in_second_process(args)
        for r in rows:
            if r["spec"]["compile"]:
                r["compile_s_warm_cache"] = second

    by_name = {r["name"]: r for r in rows}
    pub = by_name.get("published")
    for r in rows:
        r["speedup_vs_published"] = None
        r["speedup_spread"] = None
        if pub:
            # one ratio per round in which both ran (a path that failed mid-run has fewer blocks)
            ratios = [p / t for p, t in zip(pub["block_ms_per_step"], r["block_ms_per_step"])]
            r["speedup_vs_published"] = float(np.median(ratios))
            r["speedup_spread"] = spread(ratios, bootstrap=True, seed=args.seed)
        r["memory_vs_published"] = ((r["peak_gib"] / pub["peak_gib"])
                                    if pub and pub.get("peak_gib") and r.get("peak_gib") is not None
                                    else None)

    table = render(rows, device)
    print()
    print(table)
    summary = {}
    if pub and "ours" in by_name:
        ours = by_name["ours"]
        sp = ours["speedup_spread"]
        summary = {"ratio_images_per_s": ours["speedup_vs_published"],
                   "ratio_images_per_s_spread": sp,
                   "ratio_of_median_rates": ours["images_per_s"] / pub["images_per_s"],
                   "ratio_peak_memory": ours["memory_vs_published"],
                   "pairs": sp["n"], "target_ratio": 3.0, "stretch_ratio": 4.0}
        mem = (f", peak memory {ours['memory_vs_published']:.2f}x"
               if ours["memory_vs_published"] is not None else "")
        print(f"\nratio ours/published: {ours['speedup_vs_published']:.2f}x images/s (median of "
              f"{sp['n']} interleaved pair(s); IQR {sp['q25']:.2f}-{sp['q75']:.2f}x, range "
              f"{sp['min']:.2f}-{sp['max']:.2f}x, 95% bootstrap interval of the median "
              f"{sp['ci95'][0]:.2f}-{sp['ci95'][1]:.2f}x){mem}"
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
               "timing": {"method": "interleaved", "rounds": rounds, "block": args.block,
                          "order": "paths rotated by one position each round",
                          "spread": "q25/q75 (IQR) and min/max of the per-block ms/step; ratios "
                                    "paired per round, 95% percentile bootstrap of their median "
                                    f"({BOOTSTRAP} resamples)"},
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


def spread(values: list[float], *, bootstrap: bool = False, seed: int = 0) -> dict:
    """Median, quartiles (IQR), range of ``values``; optionally a 95% percentile-bootstrap
    interval of the median (resampling the values, e.g. the paired per-round ratios)."""
    v = np.asarray(values, dtype=float)
    q25, med, q75 = np.percentile(v, [25, 50, 75])
    out = {"n": int(v.size), "median": float(med), "q25": float(q25), "q75": float(q75),
           "min": float(v.min()), "max": float(v.max())}
    if bootstrap:
        rng = np.random.default_rng(seed)
        meds = np.median(v[rng.integers(0, v.size, (BOOTSTRAP, v.size))], axis=1)
        out["ci95"] = [float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))]
    return out


def path_spec(name: str, device: torch.device, precision: str) -> common.PathSpec:
    if name == "published_nolgc":
        return common.published_spec(device, lgc=False)
    if name == "published":
        return common.published_spec(device)
    return common.ours_spec(device, precision, compile=name == "ours_compiled")


def measure(args, masters: dict, x: torch.Tensor, targets: torch.Tensor, device: torch.device,
            rounds: int) -> tuple[list[dict], list[dict]]:
    """Build and warm up every path (one at a time, each under its own memory meter), then time
    them interleaved: ``rounds`` rounds, each one block of ``args.block`` steps per path, the order
    rotated by one path per round. Returns (rows, failures)."""
    targets = targets.to(device)
    live: dict[str, dict] = {}
    failed: list[dict] = []

    def fail(name: str, spec: common.PathSpec, e: Exception) -> None:
        import traceback     # an OOM or a compile failure must not hide the other rows
        traceback.print_exc()
        failed.append({"name": name, "spec": spec.describe(), "error": repr(e)})
        print(f"  {name}: FAILED ({e!r})", flush=True)
        state = live.pop(name, None)
        if state is not None and state.get("trainer") is not None:
            state["trainer"].close()
        common.free_memory()

    # 1. build + warm up, path by path; the others built so far stay alive for the timing, so
    #    each meter counts its own path only (CUDA: allocated - allocated at the start; CPU:
    #    the peak RSS increase, an indication)
    for name in args.paths:
        spec = path_spec(name, device, args.precision)
        try:
            meter = common.MemoryMeter(device)
            with meter:
                trainer = common.Trainer(masters[spec.lgc], spec, device, seed=args.seed)
                live[name] = {"trainer": trainer, "spec": spec, "losses": [], "blocks": []}
                trainer.reset_generator()   # the same MixUp draws, step by step, in every path
                t0 = time.perf_counter()
                first_step_s = None
                for i in range(args.warmup):
                    live[name]["losses"].append(trainer.step(x, targets))
                    if i == 0:
                        common.sync(device)
                        first_step_s = time.perf_counter() - t0
                common.sync(device)
                warm_s = time.perf_counter() - t0
        except Exception as e:
            fail(name, spec, e)
            continue
        mem = meter.result()
        if device.type == "cuda":       # this path's own memory, not the paths built before it
            mem["peak_gib"] = mem["peak_gib"] - mem["base_gib"]
        live[name].update(mem=mem, first_step_s=first_step_s, warmup_s=warm_s)
        print(f"  {name}: built and warmed up ({args.warmup} step(s), {warm_s:.1f} s)",
              flush=True)

    # 2. interleaved timing: per round one block per path, order rotated each round
    order = list(live)
    for r in range(rounds):
        k = r % max(len(order), 1)
        for name in order[k:] + order[:k]:
            state = live.get(name)
            if state is None:
                continue
            trainer = state["trainer"]
            try:
                common.sync(device)
                t0 = time.perf_counter()
                for _ in range(args.block):
                    state["losses"].append(trainer.step(x, targets))
                common.sync(device)
                state["blocks"].append(1000.0 * (time.perf_counter() - t0) / args.block)
            except Exception as e:
                fail(name, state["spec"], e)

    # 3. per-path statistics
    rows = []
    for name in args.paths:
        state = live.get(name)
        if state is None:
            continue
        trainer, spec, blocks = state["trainer"], state["spec"], state["blocks"]
        values = [float(v) for v in torch.stack(state["losses"]).float().cpu()]
        st = spread(blocks)
        res = {"steps": len(blocks) * args.block, "warmup": args.warmup, "block": args.block,
               "blocks": len(blocks), "block_ms_per_step": blocks,
               "seconds": sum(blocks) * args.block / 1000.0,
               "ms_per_step": st["median"], "ms_per_step_spread": st,
               "ms_per_step_mean": float(np.mean(blocks)),
               "images_per_s": x.shape[0] / (st["median"] / 1000.0),
               "first_step_s": state["first_step_s"], "warmup_s": state["warmup_s"],
               "first_loss": values[0] if values else None,
               "last_loss": values[-1] if values else None,
               "finite": bool(np.all(np.isfinite(values)))}
        if trainer.scaler is not None:
            res["grad_scale"] = float(trainer.scaler.get_scale())
        res.update(state["mem"])
        res.update(name=name, spec=spec.describe())
        if spec.compile:
            # the first step compiles forward and backward; later warm-up steps run compiled
            res["compile_s"] = (res["first_step_s"] - res["ms_per_step"] / 1000.0
                                if res["first_step_s"] is not None else None)
            res["compile_cache"] = args.compile_cache
        rows.append(res)
        print(f"  {name}: {res['images_per_s']:.1f} images/s, {res['ms_per_step']:.1f} ms/step "
              f"median (IQR {st['q25']:.1f}-{st['q75']:.1f}, range {st['min']:.1f}-"
              f"{st['max']:.1f}, {st['n']} block(s)), peak {common.fmt(res['peak_gib'], 2)} GiB, "
              f"first loss {res['first_loss']:.4f}"
              + (f", compile {common.fmt(res['compile_s'])} s" if spec.compile else ""),
              flush=True)
    for state in live.values():
        state["trainer"].close()
    live.clear()
    common.free_memory()
    return rows, failed


def render(rows: list[dict], device: torch.device) -> str:
    mem_head = "peak GiB (CUDA alloc)" if device.type == "cuda" else "peak GiB (RSS delta)"
    headers = ["path", "LGC", "precision", "layout", "Adam", "passes", "EMA", "images/s",
               "ms/step median [IQR] (range)", mem_head, "speed vs published median [IQR]",
               "memory vs published"]
    out = []
    for r in rows:
        s = r["spec"]
        lgc = s["lgc_impl"] if s["lgc"] else "none"
        prec = s["precision"] + (" + GradScaler" if s["precision"] == "fp16" else "")
        name = r["name"] + (f" (compile {common.fmt(r['compile_s'], 0)} s"
                            + (f", warm cache {common.fmt(r['compile_s_warm_cache'], 0)} s"
                               if r.get("compile_s_warm_cache") is not None else "") + ")"
                            if s["compile"] else "")
        ms = r["ms_per_step_spread"]
        sp = r.get("speedup_spread")
        out.append([name, lgc, prec, "channels_last" if s["channels_last"] else "NCHW",
                    {"single": "foreach=False", "fused": "fused", "default": "default"}[s["adam"]],
                    "1 fused" if s["fused_step"] else "2", "ASL loop" if s["ema"] == "asl"
                    else "trainable lerp", common.fmt(r["images_per_s"]),
                    f"{ms['median']:.1f} [{ms['q25']:.1f}-{ms['q75']:.1f}] "
                    f"({ms['min']:.1f}-{ms['max']:.1f})",
                    common.fmt(r["peak_gib"], 2),
                    (f"{r['speedup_vs_published']:.2f}x [{sp['q25']:.2f}-{sp['q75']:.2f}]"
                     if r["speedup_vs_published"] else "n/a"),
                    (f"{r['memory_vs_published']:.2f}x" if r["memory_vs_published"] else "n/a")])
    return common.markdown_table(headers, out)


def compile_in_second_process(args) -> float | None:
    """Compile time of a fresh process with the cache the first one filled (a second trial)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "second.json"
        cmd = [sys.executable, __file__, "--device", args.device, "--model", args.model,
               "--size", str(args.size), "--batch", str(args.batch), "--classes",
               str(args.classes), "--steps", "3", "--block", "1", "--warmup", "2",
               "--paths", "ours_compiled",
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
