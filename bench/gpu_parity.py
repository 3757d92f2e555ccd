#!/usr/bin/env python
"""Fast vs literal local-global branch on the device: same outputs and gradients.

``tests/test_lgc_parity.py`` checks the fast form on the CPU; the CUDA kernels (cuDNN convs in
channels_last, bf16/fp16 autocast, the fused centre-tap conv and its hand-written backward) are
only exercised on a GPU, so this script repeats the check there, on ResNet-101-like layers and on
the whole network:

* fp32 (TF32 off), NCHW and channels_last: fast vs literal, relative error < 1e-5 (layers) /
  within 3x the fp32 rounding of the network (whole model, measured against float64);
* bf16 and fp16 autocast: both forms against a float64 literal reference; the fast form's error
  must not exceed 1.5x the literal form's own error (+ a small floor): it is no less accurate
  than the published computation in the same precision.

    python bench/gpu_parity.py                  # CUDA
    python bench/gpu_parity.py --device cpu     # the same checks on the CPU (smaller, fp32/bf16)
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torchvision.models.resnet import Bottleneck  # noqa: E402

from pu_mlc.models import LocalGlobalConv, build_model, lgc_modules, set_lgc_impl  # noqa: E402

# c_in, c_out, stride, side (input), conv trainable (layer4's are)
LAYERS = [(64, 64, 1, 56, False), (128, 128, 2, 56, False), (256, 256, 1, 28, False),
          (256, 256, 2, 28, False), (512, 512, 2, 14, True), (512, 512, 1, 7, True)]
ZERO_GRAD = ("agg_attn.bias", "semantic.fc3.bias", "semantic.fc4.bias")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def grad_err(g: dict, ref: dict, whole: bool) -> float:
    """Worst per-tensor relative error (layers), or the error of all gradients concatenated
    (whole network: tensors whose gradient is ~0 there are pure rounding noise)."""
    if whole:
        return rel(torch.cat([g[n].flatten().double() for n in ref]),
                   torch.cat([ref[n].flatten().double() for n in ref]))
    return max(rel(g[n], ref[n]) for n in ref)


def randomise_branch_bn(module: nn.Module, gen: torch.Generator) -> None:
    """O(1) BN weights and running statistics: the ~1e-4 init would hide any error."""
    with torch.no_grad():
        for lgc in lgc_modules(module):
            bn = lgc.global_branch.norm
            bn.weight.copy_(torch.randn(bn.weight.shape, generator=gen))
            bn.bias.copy_(torch.randn(bn.bias.shape, generator=gen))
            bn.running_mean.copy_(0.1 * torch.randn(bn.running_mean.shape, generator=gen))
            bn.running_var.copy_(0.5 + torch.rand(bn.running_var.shape, generator=gen))


def run(module: nn.Module, x: torch.Tensor, w: torch.Tensor, impl: str, dtype: torch.dtype,
        autocast: torch.dtype | None, channels_last: bool) -> tuple[torch.Tensor, dict]:
    m = copy.deepcopy(module).to(dtype)
    set_lgc_impl(m, impl)
    xi = x.to(dtype)
    if channels_last:
        m.to(memory_format=torch.channels_last)
        xi = xi.contiguous(memory_format=torch.channels_last)
    xi.requires_grad_(True)
    params = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
    with torch.autocast(x.device.type, dtype=autocast or torch.bfloat16,
                        enabled=autocast is not None):
        y = m(xi)
    grads = torch.autograd.grad((y.float() * w.to(y.device).float()).sum(),
                                [xi] + [p for _, p in params], allow_unused=True)
    names = ["input"] + [n for n, _ in params]
    return y.detach(), {n: g for n, g in zip(names, grads)
                        if g is not None and not n.endswith(ZERO_GRAD)}


def compare(module, x, w, mode: str, device) -> dict:
    """fast vs literal under ``mode``; returns the worst relative errors and a verdict."""
    cl = mode.endswith("_cl")
    prec = mode.split("_")[0]
    whole = not isinstance(module, LocalGlobalConv)
    if prec == "fp32":
        yl, gl = run(module, x, w, "literal", torch.float32, None, cl)
        yf, gf = run(module, x, w, "fast", torch.float32, None, cl)
        out_err = rel(yf, yl)
        tol = None if whole else 1e-5
        return {"mode": mode, "out_err": out_err, "grad_err": grad_err(gf, gl, whole), "tol": tol}
    ac = {"bf16": torch.bfloat16, "fp16": torch.float16}[prec]
    y64, g64 = run(module, x, w, "literal", torch.float64, None, False)
    yl, gl = run(module, x, w, "literal", torch.float32, ac, cl)
    yf, gf = run(module, x, w, "fast", torch.float32, ac, cl)
    lit = {"out": rel(yl, y64), "grad": grad_err(gl, g64, whole)}
    fast = {"out": rel(yf, y64), "grad": grad_err(gf, g64, whole)}
    ok = all(fast[k] <= 1.5 * lit[k] + 2e-3 for k in lit)
    return {"mode": mode, "literal_vs_fp64": lit, "fast_vs_fp64": fast, "ok": ok}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--json")
    args = p.parse_args(argv)
    device = common.pick_device(args.device)
    cuda = device.type == "cuda"
    old = common.fp32_exact_math()
    modes = ["fp32", "fp32_cl", "bf16", "bf16_cl"] + (["fp16", "fp16_cl"] if cuda else [])
    gen = torch.Generator().manual_seed(0)
    results, failures = [], []
    print(f"# LGC parity on {device} (fast vs literal; TF32 off)")
    for c_in, c_out, stride, side, trainable in LAYERS:
        side = side if cuda else max(7, side // 4)
        torch.manual_seed(0)
        module = LocalGlobalConv(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False))
        randomise_branch_bn(module, gen)
        module.conv.requires_grad_(trainable)
        module = module.to(device).eval()
        x = torch.randn(args.batch, c_in, side, side, generator=gen).to(device)
        with torch.no_grad():
            w = torch.randn(module(x).shape, generator=gen).to(device)
        for mode in modes:
            r = compare(module, x, w, mode, device)
            r["layer"] = f"{c_in}->{c_out} s{stride} {side}x{side}" + (" conv trained"
                                                                       if trainable else "")
            if "tol" in r:
                r["ok"] = r["out_err"] < r["tol"] and r["grad_err"] < r["tol"]
            results.append(r)
            if not r["ok"]:
                failures.append(r)
            print(f"  {r['layer']:32s} {mode:8s} " + line(r), flush=True)

    # whole network: ResNet-101 + SSGRL head, kept well conditioned as in tests/test_lgc_parity.py
    # (residual branches scaled by 0.5, O(1) branch BNs): otherwise fp32 rounding alone changes
    # the gradients of a random 101-layer network completely and nothing can be compared
    torch.manual_seed(0)
    model = build_model("resnet101", 80, word_vectors=common.word_vectors(80, 0),
                        adjacency=common.adjacency(80, 0))
    with torch.no_grad():
        for m in model.backbone.modules():
            if isinstance(m, Bottleneck):
                m.bn3.weight.fill_(0.5)
    randomise_branch_bn(model, gen)
    model.to(device).train()
    side = 224 if cuda else 128
    x = torch.randn(2, 3, side, side, generator=gen).to(device)
    w = torch.randn(2, 80, generator=gen).to(device)
    for mode in (["fp32", "fp32_cl", "bf16_cl"] if cuda else ["fp32"]):
        r = compare(model, x, w, mode, device)
        r["layer"] = f"resnet101+ssgrl 2x{side}px"
        if mode.startswith("fp32"):
            y64, g64 = run(model, x, w, "literal", torch.float64, None, False)
            yl, gl = run(model, x, w, "literal", torch.float32, None, mode.endswith("_cl"))
            noise_out = rel(yl, y64)
            noise_grad = grad_err(gl, g64, True)
            r.update(fp32_rounding={"out": noise_out, "grad": noise_grad})
            r["ok"] = (r["out_err"] <= max(1e-4, 3 * noise_out)
                       and r["grad_err"] <= max(1e-4, 3 * noise_grad))
        results.append(r)
        if not r["ok"]:
            failures.append(r)
        print(f"  {r['layer']:32s} {mode:8s} " + line(r), flush=True)
    common.restore_math(old)
    print(f"\nLGC parity: {len(results) - len(failures)}/{len(results)} checks OK"
          + ("" if not failures else f"; FAILED: {[(f['layer'], f['mode']) for f in failures]}"))
    common.write_json(args.json, {"benchmark": "gpu_parity", "environment":
                                  common.environment(device), "results": results,
                                  "ok": not failures})
    return 1 if failures else 0


def line(r: dict) -> str:
    verdict = "OK" if r["ok"] else "FAIL"
    if "out_err" in r:
        extra = (f" (fp32 rounding {r['fp32_rounding']['out']:.1e}/"
                 f"{r['fp32_rounding']['grad']:.1e})" if "fp32_rounding" in r else "")
        return f"out {r['out_err']:.1e}  grad {r['grad_err']:.1e}{extra}  {verdict}"
    lit, fast = r["literal_vs_fp64"], r["fast_vs_fp64"]
    return (f"vs fp64: literal out {lit['out']:.1e} grad {lit['grad']:.1e} | fast out "
            f"{fast['out']:.1e} grad {fast['grad']:.1e}  {verdict}")


if __name__ == "__main__":
    sys.exit(main())
