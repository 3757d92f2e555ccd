"""The step benchmark runs end to end at a toy size and reports a fair comparison.

A real run of ``bench/bench_step.py`` in a subprocess (ResNet-50 at 64 px, batch 2, three timed
steps per path interleaved one by one, one thread): both rows are measured, the ratio is printed
with its spread, the JSON is valid and its ratio is the median of the per-round paired ratios, and
the published and our formulation give the same first-step loss from the same weights, batch and
MixUp draw (to rounding in float64, within fp32 rounding in fp32).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from limits import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "step.json"
    cmd = [sys.executable, str(REPO / "bench" / "bench_step.py"), "--device", "cpu",
           "--model", "resnet50", "--size", "64", "--batch", "2", "--steps", "3", "--warmup", "1",
           "--paths", "published,ours", "--threads", "1", "--json", str(out)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=REPO, env=env)
    return res, out


def test_step_benchmark_exits_cleanly_and_prints_the_ratio(bench_run):
    res, _ = bench_run
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "ratio ours/published:" in res.stdout
    assert "median of 3 interleaved pair(s); IQR" in res.stdout
    assert "| published |" in res.stdout and "| ours |" in res.stdout
    assert "-> OK" in res.stdout


def test_step_benchmark_json_has_both_rows_with_positive_rates(bench_run):
    res, out = bench_run
    assert res.returncode == 0, res.stderr[-3000:]
    payload = json.loads(out.read_text())
    rows = {r["name"]: r for r in payload["rows"]}
    assert set(rows) == {"published", "ours"}
    for r in rows.values():
        assert r["images_per_s"] > 0 and r["ms_per_step"] > 0
        assert r["finite"]
    assert rows["published"]["spec"]["lgc_impl"] == "literal"
    assert rows["published"]["spec"]["fused_step"] is False
    assert rows["ours"]["spec"]["lgc_impl"] == "fast"
    assert rows["ours"]["spec"]["fused_step"] is True
    timing = payload["timing"]
    assert timing["method"] == "interleaved" and timing["rounds"] == 3 and timing["block"] == 1
    for r in rows.values():
        blocks, sp = r["block_ms_per_step"], r["ms_per_step_spread"]
        assert len(blocks) == 3 and all(b > 0 for b in blocks)
        assert sp["min"] <= sp["q25"] <= sp["median"] <= sp["q75"] <= sp["max"]
        assert r["ms_per_step"] == pytest.approx(statistics.median(blocks))
        assert r["images_per_s"] == pytest.approx(2 / (r["ms_per_step"] / 1000))
    # the ratio pairs the two paths' blocks of the same round
    pairs = [p / o for p, o in zip(rows["published"]["block_ms_per_step"],
                                   rows["ours"]["block_ms_per_step"])]
    summary = payload["summary"]
    assert summary["ratio_images_per_s"] == pytest.approx(statistics.median(pairs))
    spread = summary["ratio_images_per_s_spread"]
    assert spread["n"] == summary["pairs"] == 3
    assert spread["min"] <= spread["q25"] <= spread["median"] <= spread["q75"] <= spread["max"]
    low, high = spread["ci95"]
    assert spread["min"] <= low <= spread["median"] <= high <= spread["max"]


def test_both_formulations_give_the_same_first_step_loss(bench_run):
    res, out = bench_run
    assert res.returncode == 0, res.stderr[-3000:]
    parity = json.loads(out.read_text())["loss_parity"]
    assert parity["ok"]
    f64, f32 = parity["fp64"], parity["fp32"]
    assert math.isfinite(f64["published_loss"])
    assert f64["ours_loss"] == pytest.approx(f64["published_loss"], rel=1e-6)
    assert f32["ours_loss"] == pytest.approx(f32["published_loss"], rel=f32["tolerance"]["loss"])
    # the timed fp32 runs start from the same state, so their first losses agree as well
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["ours"]["first_loss"] == pytest.approx(rows["published"]["first_loss"],
                                                       rel=max(1e-4, f32["tolerance"]["loss"]))
