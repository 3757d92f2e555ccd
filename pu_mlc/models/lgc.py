"""Local-global convolution (LGC): the published global branch added to every 3x3 conv.

PU-MLC turns each 3x3 conv of the backbone into ``conv(x) + G(x)``, where ``G``
(:class:`GlobalBranch`, SPEC §3) pools the whole map into one vector per attention head and
broadcasts it back through a position-wise gate, so even early layers see image-level context.
Its BatchNorm starts with weights ~ N(0, 1e-4), so at initialisation ``G`` is ~0 and the
pretrained features are kept.

Two implementations share one set of parameters (same names and shapes, checkpoints are
interchangeable):

``literal``
    :meth:`GlobalBranch.forward`, the published op order: two full-resolution C x C 1x1 convs
    (``v`` and ``proj``) plus 5-D broadcasts. A training step costs several plain ResNet-101 steps.

``fast`` (default)
    The same function, rewritten (:meth:`LocalGlobalConv.forward_fast`):

    * the softmax weights of each head sum to 1 over positions, so
      ``u_h = W_v,h (sum_p a[h,p] x_p) + b_v,h``: ``x`` is pooled per head first (one bmm) and
      ``v`` becomes an (8 x C) matmul: the full-resolution ``v`` conv disappears;
    * ``g`` has rank <= 8 per image (``g[:, p] = sum_h b[h,p] e_h``), so
      ``proj(x + g) = proj(x) + sum_h (W_proj[:, head h] u_h) b[h, p]``: per head a C_out vector
      times the gate map (subsampled with the stride, as the strided 1x1 conv samples);
    * the BatchNorm is in eval mode (the model keeps every BN in eval), i.e. an affine map: it is
      folded into ``proj`` in the forward pass, so its weight and bias still get gradients;
    * a 3x3 conv with padding 1 (plain ``nn.Conv2d``, groups 1, dilation 1, zero padding) plus a
      1x1 conv of the same stride equals one 3x3 conv whose centre tap carries the 1x1 weights
      (the centre tap of output ``i`` reads input ``s*i``, the sample of the strided 1x1 conv).
      The fused weight is built in the forward pass, so gradients reach ``conv``, ``proj`` and
      the BN; its backward (:class:`_CentreFusedConv`) computes the 3x3 weight gradient only
      when ``conv.weight`` is trainable (layer4), else just the 1x1 gradient ``proj`` needs.
      Other convs (depthwise, timm ``Conv2dSame`` with its asymmetric padding, dilated) keep
      ``proj`` as a separate strided 1x1 conv.

    Mixed precision: the big convolutions and the pooling bmm run in the autocast (or input)
    dtype like the literal form; the attention softmax/sigmoid and the small per-image algebra
    (``u``, the folded BN, the per-head vectors, the fused weight before its cast) run in float32
    (float64 for float64 parameters) with autocast off; the rank-8 term is added to the conv
    output inside one ``baddbmm`` in the output's dtype. The output has the dtype and memory
    format (channels_last included) of the conv output, as in the literal form.

    If the branch's BatchNorm is in training mode (or keeps no running statistics) the BN is not an
    affine map, so ``fast`` silently computes the literal form instead: semantics never change
    with the implementation, only speed.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..choices import LGC_IMPLS

log = logging.getLogger(__name__)

NUM_HEADS = 8
REDUCTION_RATIO = 4


def _check_impl(impl: str) -> str:
    if impl not in LGC_IMPLS:
        raise ValueError(f"unknown LGC implementation {impl!r}; choose one of "
                         f"{', '.join(LGC_IMPLS)}")
    return impl


class GlobalBranch(nn.Module):
    """The published global branch ``G(x)`` (SPEC §3); ``forward`` is the literal form.

    Parameter names (``reduction``, ``agg_attn``, ``broad_attn``, ``v``, ``proj``, ``norm``) and
    bias flags (every 1x1 conv has a bias) follow the official code, so its checkpoints map 1:1.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: tuple[int, int] | int = 1,
                 num_heads: int = NUM_HEADS, reduction_ratio: int = REDUCTION_RATIO) -> None:
        super().__init__()
        if in_channels % num_heads or in_channels < num_heads:
            raise ValueError(f"in_channels={in_channels} must be a positive multiple of "
                             f"num_heads={num_heads}")
        self.num_heads = num_heads
        mid = in_channels // reduction_ratio
        self.reduction = nn.Conv2d(in_channels, mid, 1)
        self.agg_attn = nn.Conv2d(2 * mid, num_heads, 1)
        self.broad_attn = nn.Conv2d(2 * mid, num_heads, 1)
        self.v = nn.Conv2d(in_channels, in_channels, 1)
        self.proj = nn.Conv2d(in_channels, out_channels, 1, stride=stride)
        self.norm = nn.BatchNorm2d(out_channels)
        # small BN weights: G(x) ~ 0 at the start, the pretrained features are kept
        nn.init.normal_(self.norm.weight, 0.0, 1e-4)
        nn.init.zeros_(self.norm.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        local = F.relu(self.reduction(x))
        hidden = torch.cat([local, local.mean((2, 3), keepdim=True).expand(-1, -1, h, w)], 1)
        agg = torch.softmax(self.agg_attn(hidden).view(n, self.num_heads, h * w), 2)
        agg = agg.view(n, self.num_heads, 1, h, w)
        gate = torch.sigmoid(self.broad_attn(hidden)).unsqueeze(2)  # (n, heads, 1, h, w)
        v = self.v(x).view(n, self.num_heads, c // self.num_heads, h, w)
        u = (v * agg).sum((-1, -2), keepdim=True)                   # (n, heads, c/heads, 1, 1)
        g = (u.expand(-1, -1, -1, h, w) * gate).reshape(n, c, h, w)
        return self.norm(self.proj(x + g))


def _fusable(conv: nn.Conv2d) -> bool:
    """Whether ``conv(x) + conv1x1_stride(x)`` equals one 3x3 conv with the 1x1 in the centre."""
    return (type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.groups == 1
            and conv.dilation == (1, 1) and conv.padding == (1, 1)
            and conv.padding_mode == "zeros")


class _CentreFusedConv(torch.autograd.Function):
    """``conv3x3(x, w3 + centre(w1)) + bias`` with a backward that never wastes work.

    Autograd through a weight built as ``w3 + pad(w1)`` would compute the full 3x3 weight
    gradient even when ``w3`` is frozen, only to keep its centre: 9x the work of the 1x1 weight
    gradient. Here the 3x3 weight gradient is computed only when ``w3`` needs it (then ``w1``'s is
    its centre tap); otherwise ``w1``'s is computed directly as a strided 1x1 weight gradient.
    ``x`` arrives in the compute dtype; the weights are summed in their own (float32) dtype, then
    cast, and gradients are returned in each input's dtype.
    """

    @staticmethod
    def forward(ctx, x, w3, w1, bias, stride):  # type: ignore[override]
        with torch.autocast(x.device.type, enabled=False):
            weight = w3.to(w1.dtype, copy=True)
            weight[:, :, 1, 1] += w1
            weight = weight.to(x.dtype)
            out = F.conv2d(x, weight, bias.to(x.dtype), stride, 1)
        ctx.save_for_backward(x, weight)
        ctx.stride = stride
        ctx.dtypes = (w3.dtype, w1.dtype, bias.dtype)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        stride = ctx.stride
        need_x, need_w3, need_w1, need_b, _ = ctx.needs_input_grad
        gx = gw3 = gw1 = gb = None
        with torch.autocast(x.device.type, enabled=False):
            grad = grad.to(x.dtype)
            if need_x:
                gx = torch.nn.grad.conv2d_input(x.shape, weight, grad, stride, 1)
            if need_w3:
                gw3 = torch.nn.grad.conv2d_weight(x, weight.shape, grad, stride, 1)
                if need_w1:
                    gw1 = gw3[:, :, 1, 1].to(ctx.dtypes[1])
                gw3 = gw3.to(ctx.dtypes[0])
            elif need_w1:   # gradient of a strided 1x1 conv: one bmm over positions
                xs = x[:, :, ::stride[0], ::stride[1]].flatten(2)
                gw1 = torch.bmm(grad.flatten(2), xs.transpose(1, 2)).sum(0).to(ctx.dtypes[1])
            if need_b:
                gb = grad.sum((0, 2, 3)).to(ctx.dtypes[2])
        return gx, gw3, gw1, gb, None


class LocalGlobalConv(nn.Module):
    """``conv(x) + global_branch(x)``: a 3x3 conv with the published global branch beside it.

    ``impl`` selects the literal or the fast computation of the same function (both use the same
    parameters; :func:`set_lgc_impl` switches a whole model). ``fusable`` tells whether the conv
    allows folding ``proj`` into its centre tap; ``fuse = False`` turns the folding off (the fast
    form then runs ``proj`` as a separate 1x1 conv; tests use it to check both paths).
    """

    def __init__(self, conv: nn.Conv2d, impl: str = "fast", num_heads: int = NUM_HEADS,
                 reduction_ratio: int = REDUCTION_RATIO) -> None:
        super().__init__()
        self.conv = conv
        self.global_branch = GlobalBranch(conv.in_channels, conv.out_channels, conv.stride,
                                          num_heads, reduction_ratio).to(
            device=conv.weight.device, dtype=conv.weight.dtype)
        self.impl = _check_impl(impl)
        self.fuse: Optional[bool] = None
        self.fusable = _fusable(conv)

    def extra_repr(self) -> str:
        return f"impl={self.impl!r}, fusable={self.fusable}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.global_branch.norm
        if self.impl == "literal" or norm.training or norm.running_mean is None:
            return self.forward_literal(x)
        return self.forward_fast(x)

    def forward_literal(self, x: torch.Tensor) -> torch.Tensor:
        """The published computation."""
        return self.conv(x) + self.global_branch(x)

    def _use_fusion(self) -> bool:
        return self.fusable and self.fuse is not False

    def forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """The same function as :meth:`forward_literal`, rewritten; needs the BN in eval mode."""
        conv, gb = self.conv, self.global_branch
        proj, norm, heads = gb.proj, gb.norm, gb.num_heads
        n, c, h, w = x.shape
        mid = gb.reduction.out_channels
        dev = x.device.type
        autocast = torch.is_autocast_enabled(dev)
        cdt = torch.get_autocast_dtype(dev) if autocast else x.dtype   # dtype of big ops
        pdt = torch.promote_types(proj.weight.dtype, torch.float32)     # dtype of small algebra

        # attention logits of both gates: conv over cat(L, mean L) split into its two halves
        local = F.relu(gb.reduction(x))
        w_att = torch.cat([gb.agg_attn.weight, gb.broad_attn.weight], 0).flatten(1)
        b_att = torch.cat([gb.agg_attn.bias, gb.broad_attn.bias], 0)
        per_image = F.linear(local.mean((2, 3)), w_att[:, mid:], b_att)
        logits = F.conv2d(local, w_att[:, :mid, None, None])
        logits = (logits + per_image.to(logits.dtype)[:, :, None, None]).to(pdt)
        agg = torch.softmax(logits[:, :heads].flatten(2), dim=-1)       # (n, heads, h*w)
        gate = torch.sigmoid(logits[:, heads:])                          # (n, heads, h, w)
        # per-head pooling of x (weights sum to 1): the v conv then acts on 8 vectors only
        pooled = torch.bmm(agg.to(cdt), x.flatten(2).transpose(1, 2).to(cdt))   # (n, heads, c)

        stride = proj.stride
        fuse = self._use_fusion()
        with torch.autocast(dev, enabled=False):
            d = c // heads
            u = torch.einsum("hdc,nhc->nhd", gb.v.weight.to(pdt).view(heads, d, c),
                             pooled.to(pdt)) + gb.v.bias.to(pdt).view(heads, d)
            w_proj = proj.weight.to(pdt).flatten(1)                       # (c_out, c)
            c_out = w_proj.shape[0]
            weight = norm.weight.to(pdt) if norm.weight is not None else 1.0
            scale = weight * torch.rsqrt(norm.running_var.to(pdt) + norm.eps)
            shift = -norm.running_mean.to(pdt) * scale
            if proj.bias is not None:
                shift = shift + proj.bias.to(pdt) * scale
            if norm.bias is not None:
                shift = shift + norm.bias.to(pdt)
            # rank-<=8 term: per head a c_out vector times the (strided) gate map
            q = torch.einsum("ohd,nhd->nho", w_proj.view(c_out, heads, d), u) * scale
            gate_s = gate[:, :, ::stride[0], ::stride[1]]
            w_fold = w_proj * scale[:, None]                               # BN folded into proj
            if fuse and conv.bias is not None:
                shift = shift + conv.bias.to(pdt)
        if fuse:
            out = _CentreFusedConv.apply(x.to(cdt), conv.weight, w_fold, shift, conv.stride)
        else:
            out = conv(x)
            out = out + F.conv2d(x, w_fold[:, :, None, None].to(cdt), shift.to(cdt), stride)
        ho, wo = out.shape[-2:]
        if gate_s.shape[-2:] != (ho, wo):
            raise RuntimeError(f"LGC: conv output {tuple(out.shape)} does not match the strided "
                               f"1x1 projection {tuple(gate_s.shape)}")
        # out + the rank-8 term, added inside one batched GEMM (baddbmm) in out's layout
        q, gate_s = q.to(out.dtype), gate_s.to(out.dtype)
        with torch.autocast(dev, enabled=False):
            if out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous():
                flat = out.permute(0, 2, 3, 1).reshape(n, ho * wo, c_out)       # a view
                res = torch.baddbmm(flat, gate_s.flatten(2).transpose(1, 2), q)
                return res.view(n, ho, wo, c_out).permute(0, 3, 1, 2)
            res = torch.baddbmm(out.reshape(n, c_out, ho * wo), q.transpose(1, 2),
                                gate_s.flatten(2))
            return res.view(n, c_out, ho, wo)


def _convertible(module: nn.Module, num_heads: int) -> tuple[bool, str]:
    if not isinstance(module, nn.Conv2d) or module.kernel_size != (3, 3):
        return False, ""
    if module.in_channels < num_heads or module.in_channels % num_heads:
        return False, (f"in_channels={module.in_channels} is not a positive multiple of "
                       f"{num_heads} heads")
    return True, ""


def convert_to_lgc(module: nn.Module, impl: str = "fast", *, num_heads: int = NUM_HEADS,
                   reduction_ratio: int = REDUCTION_RATIO) -> int:
    """Replace, in place, every square 3x3 ``nn.Conv2d`` in ``module`` by a LocalGlobalConv.

    Subclasses (timm's ``Conv2dSame``) count; convs whose ``in_channels`` is not a positive
    multiple of ``num_heads`` (a 3-channel stem) are skipped and logged; modules already converted
    are left alone. Returns the number of convs converted.
    """
    _check_impl(impl)
    count = _convert(module, "", impl, num_heads, reduction_ratio)
    log.info("LGC: converted %d 3x3 convs (%s form)", count, impl)
    return count


def _convert(module: nn.Module, prefix: str, impl: str, num_heads: int,
             reduction_ratio: int) -> int:
    count = 0
    for attr, child in list(module.named_children()):
        name = f"{prefix}{attr}"
        if isinstance(child, LocalGlobalConv):
            continue
        ok, why = _convertible(child, num_heads)
        if ok:
            setattr(module, attr, LocalGlobalConv(child, impl, num_heads, reduction_ratio))
            count += 1
        elif why:
            log.info("LGC: %s left as a plain conv (%s)", name, why)
        else:
            count += _convert(child, f"{name}.", impl, num_heads, reduction_ratio)
    return count


def set_lgc_impl(module: nn.Module, impl: str) -> int:
    """Switch every :class:`LocalGlobalConv` in ``module`` to ``impl``; returns how many."""
    _check_impl(impl)
    count = 0
    for m in module.modules():
        if isinstance(m, LocalGlobalConv):
            m.impl = impl
            count += 1
    return count


def lgc_modules(module: nn.Module) -> list[LocalGlobalConv]:
    """Every :class:`LocalGlobalConv` in ``module``, in ``modules()`` order."""
    return [m for m in module.modules() if isinstance(m, LocalGlobalConv)]
