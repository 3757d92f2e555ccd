#!/usr/bin/env python
"""The final table of ``gpu_check.sh``: every measurement against the issue's targets.

    python bench/report.py RESULTS_DIR     # reads step.json, data.json, parity.json, ...

Writes ``summary.md`` and ``summary.json`` next to the inputs. Targets (one H100): our step >= 3x
the published formulation (stretch 4x) with peak memory no higher; end to end (JPEG files, our
default pipeline) within 15% of the synthetic-input step. Missing inputs are reported as such.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional


def load(folder: Path, name: str) -> Optional[dict]:
    p = folder / name
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        return None


def f(v: Any, d: int = 1, unit: str = "") -> str:
    return "n/a" if v is None else f"{v:.{d}f}{unit}"


def describe(spec: dict) -> str:
    return ", ".join([spec["lgc_impl"] if spec["lgc"] else "no LGC",
                      spec["precision"] + (" + GradScaler" if spec["precision"] == "fp16" else ""),
                      "channels_last" if spec["channels_last"] else "NCHW",
                      "1 fused pass" if spec["fused_step"] else "2 passes"])


def verdict(ok: Optional[bool]) -> str:
    return {True: "PASS", False: "FAIL", None: "n/a"}[ok]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0] if argv else "bench/results")
    step, data, parity = (load(folder, n) for n in ("step.json", "data.json", "parity.json"))
    cudnn, comp = load(folder, "step_cudnn_benchmark.json"), load(folder, "step_compile.json")
    audit = load(folder, "sync_audit.json")
    rows: list[list[str]] = []
    summary: dict[str, Any] = {}
    device = None

    def add(measure: str, value: str, target: str = "", ok: Optional[bool] = None,
            key: Optional[str] = None, raw: Any = None) -> None:
        rows.append([measure, value, target, verdict(ok) if target else ""])
        if key:
            summary[key] = {"value": raw, "ok": ok}

    if parity:
        add("LGC parity on the device (fast vs literal)",
            f"{sum(r['ok'] for r in parity['results'])}/{len(parity['results'])} checks OK",
            "all", parity["ok"], "parity", parity["ok"])
    if step:
        env = step["environment"]
        device = env.get("gpu", env.get("device"))
        by = {r["name"]: r for r in step["rows"]}
        for name, label in (("published", "published step"),
                            ("published_nolgc", "published step without LGC (reference ceiling)"),
                            ("ours", "our step")):
            r = by.get(name)
            if r:
                add(f"{label} ({describe(r['spec'])})", f"{f(r['images_per_s'])} img/s, {f(r['ms_per_step'])} ms/step, "
                           f"{f(r['peak_gib'], 2)} GiB")
        p32 = (step.get("loss_parity") or {})
        if p32:
            add("same math: first-step loss, fp32 / fp64", f"rel diff "
                f"{p32['fp32']['rel_diff']['loss']:.1e} / {p32['fp64']['rel_diff']['loss']:.1e}",
                "agree", p32["ok"], "loss_parity", p32["ok"])
        s = step.get("summary") or {}
        ratio, mem = s.get("ratio_images_per_s"), s.get("ratio_peak_memory")
        add("speed-up ours / published", f(ratio, 2, "x"), ">= 3x (stretch 4x)",
            None if ratio is None else ratio >= 3.0, "speedup", ratio)
        add("peak memory ours / published", f(mem, 2, "x"), "<= 1.00x",
            None if mem is None else mem <= 1.0, "memory_ratio", mem)
    if data:
        res = data["results"]
        for key, label in (("loader_pil", "loader alone: PIL in workers (published)"),
                           ("loader_device", "loader alone: bytes + decode/augment on the device (ours)"),
                           ("step_synthetic", "our step, synthetic input (same process)")):
            if key in res:
                add(label, f"{f(res[key]['images_per_s'])} img/s")
        e2e = data["summary"].get("e2e_device_vs_synthetic")
        if "e2e_device" in res:
            add("end to end, JPEG files -> our step (device pipeline)",
                f"{f(res['e2e_device']['images_per_s'])} img/s = {f(e2e, 2)} of synthetic",
                ">= 0.85", None if e2e is None else e2e >= 0.85, "e2e_device", e2e)
        if "e2e_pil" in res:
            add("end to end, JPEG files -> our step (PIL loader)",
                f"{f(res['e2e_pil']['images_per_s'])} img/s = "
                f"{f(data['summary'].get('e2e_pil_vs_synthetic'), 2)} of synthetic")
        for key, label in (("eval_ours", "evaluation, ours (regular + EMA, one pass)"),
                           ("eval_published", "evaluation, published (regular + EMA)")):
            if key in res:
                add(label, f"{f(res[key]['images_per_s'])} img/s", key=key,
                    raw=res[key]["images_per_s"])
        if data.get("errors"):
            add("bench_data failures", ", ".join(sorted(data["errors"])))
    if audit:
        for section, sites in audit["sections"].items():
            top = max(sites, key=sites.get) if sites else None
            add(f"host syncs: {section}", f"{sum(sites.values()):g}"
                + (f" (most: {sites[top]:g}x {top.split(' (')[0]})" if top else ""),
                key=f"syncs: {section}", raw=sites)
    if cudnn:
        s = cudnn.get("summary") or {}
        by = {r["name"]: r for r in cudnn["rows"]}
        if "ours" in by:
            add("with cudnn.benchmark: ours", f"{f(by['ours']['images_per_s'])} img/s, "
                f"{f(s.get('ratio_images_per_s'), 2, 'x')} published")
    if comp:
        by = {r["name"]: r for r in comp["rows"]}
        r, eager = by.get("ours_compiled"), by.get("ours")
        if r:
            gain = r["images_per_s"] / eager["images_per_s"] if eager else None
            add("torch.compile of our step", f"{f(r['images_per_s'])} img/s = {f(gain, 2, 'x')} "
                f"our eager step; compile {f(r.get('compile_s'), 0, ' s')} (cold cache), "
                f"{f(r.get('compile_s_warm_cache'), 0, ' s')} (2nd process, warm cache)",
                key="compile_gain", raw=gain)
    if not rows:
        print(f"report: no results in {folder}", file=sys.stderr)
        return 1
    table = "| measure | value | target | |\n|---|---|---|---|\n" + "\n".join(
        "| " + " | ".join(r) + " |" for r in rows)
    head = f"# PU-MLC performance check ({device or 'unknown device'})\n\n"
    print(head + table)
    (folder / "summary.md").write_text(head + table + "\n")
    (folder / "summary.json").write_text(json.dumps({"device": device, **summary}, indent=2)
                                         + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
