#!/usr/bin/python3
"""Golden vectors of the conv-block layers, from PyTorch 1.13 (Debian's python3-torch; run with /usr/bin/python3).

Writes tests/golden/data/conv_*.safetensors, read by tests/layers/test_layers_golden.cpp:
  conv_conv2d  F.conv2d for every variant the backbones use: 3x3 pad 1 (+bias), stride 2, dilation 2, groups,
               depthwise (k3, k5 stride 2 with channel multiplier 2), 1x1 (+groups, stride 2), TF "same" padding
               (stride 2 on odd/even sizes, depthwise k5, dilated) done as timm's pad_same: an explicit F.pad with
               the total pad split floor/ceil, then a padding-0 conv. Per case: x, w, (b), gy -> y, gx, gw, (gb),
               and `params` = [stride, pad_top, pad_bottom, pad_left, pad_right, dilation, groups, same] (i64)
  conv_ws      timm's ScaledStdConv2d written out (timm is not installed): w_hat = F.batch_norm(W.reshape(1, O, -1),
               None, None, weight=(gain * gamma * fan_in**-0.5).view(-1), training=True, momentum=0, eps=eps),
               then F.conv2d; per case x, w, gain, b, gy -> y, w_hat, gx, gw, ggain, gb; scalars gamma, eps (f64)
  conv_bn      torch.nn.BatchNorm2d (eps 1e-5, momentum 0.1) and BatchNorm1d on [N, C] (TF-style eps 1e-3,
               momentum 0.01) with random affine parameters: 3 train steps (y, running_mean, running_var after each,
               gradients of the 3rd step), then eval (y and gradients)
  conv_act     relu, silu, gelu (erf), sigmoid: y and dL/dx; F.prelu with one shared and with per-channel slopes
  conv_pool    F.avg_pool2d (k3 s2 p1 ceil_mode with/without count_include_pad; NFNet's k2 s2 ceil_mode
               count_include_pad=False on odd sizes), F.max_pool2d (k3 s2 p1; k2 ceil_mode),
               F.adaptive_avg_pool2d(1): y, dL/dx; `params` = [kind (0 avg, 1 max, 2 adaptive), k, stride, pad,
               ceil_mode, count_include_pad]
  conv_se      timm's efficientnet SqueezeExcite (SiLU) and EcaModule written out: y and gradients of x and weights
Inputs are stored as float32 (the values our float32 run sees exactly); references are computed in float64
from those values and stored as float64, so one file serves the float32 test (float tolerances) and the float64
test (tight tolerances). Safetensors written by hand (8-byte LE header size + JSON + raw LE data), no extra
packages. Deterministic: fixed torch seeds; rerunning reproduces the committed files bit for bit.
"""
import json
import math
import os
import struct

import torch
import torch.nn.functional as F

from golden_io import save_safetensors

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")



def save(name, tensors, metadata=None):
    path = os.path.join(OUT, name + ".safetensors")
    size = save_safetensors(path, tensors, metadata)
    print("wrote", path, size, "data bytes")


def rand32(g, shape, lo=-1.0, hi=1.0):
    return (torch.rand(shape, generator=g, dtype=torch.float64) * (hi - lo) + lo).float()


def leaf64(t32):
    return t32.double().clone().requires_grad_(True)


def i64(values):
    return torch.tensor(values, dtype=torch.int64)


# ---- conv2d --------------------------------------------------------------------------------------------
def same_pads(size, k, stride, dilation):
    """TF "SAME" along one axis: (before, after), as timm's pad_same / get_same_padding."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


CONV_CASES = {
    # name: (x shape, w shape, bias, stride, pad (explicit, symmetric) or "same", dilation, groups)
    "k3_pad1_bias": ((2, 3, 9, 8), (5, 3, 3, 3), True, 1, 1, 1, 1),
    "k3_s2_nobias": ((2, 4, 9, 10), (6, 4, 3, 3), False, 2, 1, 1, 1),
    "k3_dilation2": ((1, 3, 10, 9), (4, 3, 3, 3), True, 1, 2, 2, 1),
    "k3_groups2": ((2, 6, 7, 7), (8, 3, 3, 3), True, 1, 1, 1, 2),
    "dw_k3": ((2, 8, 7, 7), (8, 1, 3, 3), True, 1, 1, 1, 8),
    "dw_k5_s2_mult2": ((2, 4, 11, 10), (8, 1, 5, 5), False, 2, 2, 1, 4),
    "pw_1x1": ((2, 8, 5, 4), (12, 8, 1, 1), True, 1, 0, 1, 1),
    "pw_1x1_groups4": ((2, 8, 5, 5), (8, 2, 1, 1), False, 1, 0, 1, 4),
    "pw_1x1_s2": ((2, 8, 7, 7), (4, 8, 1, 1), True, 2, 0, 1, 1),
    "same_k3_s2_odd": ((2, 3, 11, 9), (6, 3, 3, 3), True, 2, "same", 1, 1),
    "same_k3_s2_even": ((1, 3, 10, 12), (4, 3, 3, 3), False, 2, "same", 1, 1),
    "same_dw_k5_s2": ((2, 6, 9, 10), (6, 1, 5, 5), True, 2, "same", 1, 6),
    "same_k3_s1_dil2": ((1, 4, 8, 7), (4, 4, 3, 3), True, 1, "same", 2, 1),
}


def gen_conv2d():
    t = {}
    g = torch.Generator().manual_seed(20240611)
    for name, (xs, ws, bias, stride, pad, dil, groups) in CONV_CASES.items():
        x, w = rand32(g, xs), rand32(g, ws, -0.5, 0.5)
        b = rand32(g, (ws[0],)) if bias else None
        xd, wd = leaf64(x), leaf64(w)
        bd = leaf64(b) if bias else None
        if pad == "same":
            pt, pb = same_pads(xs[2], ws[2], stride, dil)
            pl, pr = same_pads(xs[3], ws[3], stride, dil)
            y = F.conv2d(F.pad(xd, (pl, pr, pt, pb)), wd, bd, stride=stride, dilation=dil, groups=groups)
            params = [stride, 0, 0, 0, 0, dil, groups, 1]
        else:
            y = F.conv2d(xd, wd, bd, stride=stride, padding=pad, dilation=dil, groups=groups)
            params = [stride, pad, pad, pad, pad, dil, groups, 0]
        gy = rand32(g, tuple(y.shape))
        y.backward(gy.double())
        case = {"x": x, "w": w, "gy": gy, "y": y, "gx": xd.grad, "gw": wd.grad, "params": i64(params)}
        if bias:
            case.update({"b": b, "gb": bd.grad})
        for k, v in case.items():
            t[f"{name}.{k}"] = v
    save("conv_conv2d", t, {"cases": ",".join(CONV_CASES)})


# ---- ScaledStdConv2d (timm's formula, written out) ---------------------------------------------------------
WS_CASES = {
    # name: (x shape, w shape, stride, padding, groups, gamma, eps)
    "nfnet_gelu_k3": ((2, 4, 7, 7), (6, 4, 3, 3), 1, 1, 1, 1.7015043497085571, 1e-5),
    "grouped_s2": ((2, 8, 9, 8), (8, 4, 3, 3), 2, 1, 2, 1.7139588594436646, 1e-5),
    "pw_1x1": ((2, 6, 5, 5), (10, 6, 1, 1), 1, 0, 1, 1.0, 1e-6),
}


def gen_ws():
    t = {}
    g = torch.Generator().manual_seed(7)
    for name, (xs, ws, stride, pad, groups, gamma, eps) in WS_CASES.items():
        x, w = rand32(g, xs), rand32(g, ws, -0.5, 0.5)
        gain, b = rand32(g, (ws[0], 1, 1, 1), 0.5, 1.5), rand32(g, (ws[0],))
        xd, wd, gd, bd = leaf64(x), leaf64(w), leaf64(gain), leaf64(b)
        fan_in = wd[0].numel()
        w_hat = F.batch_norm(wd.reshape(1, ws[0], -1), None, None, weight=(gd * gamma * fan_in ** -0.5).view(-1),
                             training=True, momentum=0.0, eps=eps).reshape_as(wd)
        y = F.conv2d(xd, w_hat, bd, stride=stride, padding=pad, groups=groups)
        gy = rand32(g, tuple(y.shape))
        y.backward(gy.double())
        case = {"x": x, "w": w, "gain": gain, "b": b, "gy": gy, "y": y, "w_hat": w_hat, "gx": xd.grad, "gw": wd.grad,
                "ggain": gd.grad, "gb": bd.grad, "params": i64([stride, pad, groups]),
                "gamma": torch.tensor([gamma], dtype=torch.float64), "eps": torch.tensor([eps], dtype=torch.float64)}
        for k, v in case.items():
            t[f"{name}.{k}"] = v
    save("conv_ws", t, {"formula": "batch_norm(W.reshape(1,O,-1), weight=gain*gamma/sqrt(fan_in), eps) then conv2d"})


# ---- BatchNorm ------------------------------------------------------------------------------------------------
def bn_case(prefix, module, shapes, g, t):
    c = module.num_features
    module.double()
    with torch.no_grad():
        w0, b0 = rand32(g, (c,), 0.5, 1.5), rand32(g, (c,), -0.5, 0.5)
        module.weight.copy_(w0.double())
        module.bias.copy_(b0.double())
    t[f"{prefix}.weight"], t[f"{prefix}.bias"] = w0, b0
    module.train()
    for step, shape in enumerate(shapes):
        # each step's batch has its own offset and scale, so the running statistics move
        x = rand32(g, shape, -2.0 + step, 3.0 + 2 * step)
        xd = leaf64(x)
        module.zero_grad()
        y = module(xd)
        gy = rand32(g, tuple(y.shape))
        y.backward(gy.double())
        t[f"{prefix}.train{step}.x"], t[f"{prefix}.train{step}.gy"], t[f"{prefix}.train{step}.y"] = x, gy, y
        t[f"{prefix}.train{step}.gx"] = xd.grad
        t[f"{prefix}.train{step}.gw"] = module.weight.grad.clone()  # zero_grad() reuses the buffer
        t[f"{prefix}.train{step}.gb"] = module.bias.grad.clone()
        t[f"{prefix}.train{step}.running_mean"] = module.running_mean.clone()
        t[f"{prefix}.train{step}.running_var"] = module.running_var.clone()
    t[f"{prefix}.num_batches_tracked"] = module.num_batches_tracked.clone()
    module.eval()
    x = rand32(g, shapes[0], -1.0, 2.0)
    xd = leaf64(x)
    module.zero_grad()
    y = module(xd)
    gy = rand32(g, tuple(y.shape))
    y.backward(gy.double())
    t[f"{prefix}.eval.x"], t[f"{prefix}.eval.gy"], t[f"{prefix}.eval.y"], t[f"{prefix}.eval.gx"] = x, gy, y, xd.grad
    t[f"{prefix}.eval.gw"], t[f"{prefix}.eval.gb"] = module.weight.grad.clone(), module.bias.grad.clone()
    t[f"{prefix}.config"] = torch.tensor([module.eps, module.momentum], dtype=torch.float64)


def gen_bn():
    t = {}
    g = torch.Generator().manual_seed(11)
    bn_case("bn2d", torch.nn.BatchNorm2d(5, eps=1e-5, momentum=0.1), [(4, 5, 4, 5)] * 3, g, t)
    bn_case("bn1d_tf", torch.nn.BatchNorm1d(6, eps=1e-3, momentum=0.01), [(9, 6)] * 3, g, t)
    save("conv_bn", t, {"bn2d": "BatchNorm2d(5, eps=1e-5, momentum=0.1)",
                        "bn1d_tf": "BatchNorm1d(6, eps=1e-3, momentum=0.01)"})


# ---- activations --------------------------------------------------------------------------------------------
def gen_act():
    t = {}
    g = torch.Generator().manual_seed(3)
    x = rand32(g, (3, 4, 5, 6), -6.0, 6.0)
    gy = rand32(g, (3, 4, 5, 6))
    t["x"], t["gy"] = x, gy
    for name, f in {"relu": F.relu, "silu": F.silu, "gelu": F.gelu, "sigmoid": torch.sigmoid}.items():
        xd = leaf64(x)
        y = f(xd)
        y.backward(gy.double())
        t[f"{name}.y"], t[f"{name}.gx"] = y, xd.grad
    for name, w in {"prelu1": torch.tensor([0.25], dtype=torch.float32),
                    "prelu4": torch.tensor([0.1, -0.3, 0.6, 0.02], dtype=torch.float32)}.items():
        xd, wd = leaf64(x), leaf64(w)
        y = F.prelu(xd, wd)
        y.backward(gy.double())
        t[f"{name}.w"], t[f"{name}.y"], t[f"{name}.gx"], t[f"{name}.gw"] = w, y, xd.grad, wd.grad
    save("conv_act", t, {"gelu": "exact erf form (approximate='none')"})


# ---- pooling ----------------------------------------------------------------------------------------------------
POOL_CASES = {
    # name: (x shape, kind, k, stride, pad, ceil_mode, count_include_pad)
    "avg_k3s2p1_ceil_incl": ((2, 3, 9, 8), 0, 3, 2, 1, True, True),
    "avg_k3s2p1_ceil_excl": ((2, 3, 9, 8), 0, 3, 2, 1, True, False),
    "avg_nfnet_k2s2_odd": ((2, 3, 7, 9), 0, 2, 2, 0, True, False),
    "avg_k2s1": ((1, 2, 5, 6), 0, 2, 1, 0, False, True),
    "max_k3s2p1": ((2, 3, 9, 8), 1, 3, 2, 1, False, True),
    "max_k2_ceil": ((2, 3, 7, 7), 1, 2, 2, 0, True, True),
    "adaptive_1": ((2, 5, 4, 7), 2, 0, 0, 0, False, True),
}


def gen_pool():
    t = {}
    g = torch.Generator().manual_seed(5)
    for name, (xs, kind, k, stride, pad, ceil, cip) in POOL_CASES.items():
        x = rand32(g, xs, -2.0, 2.0)
        xd = leaf64(x)
        if kind == 0:
            y = F.avg_pool2d(xd, k, stride, pad, ceil_mode=ceil, count_include_pad=cip)
        elif kind == 1:
            y = F.max_pool2d(xd, k, stride, pad, ceil_mode=ceil)
        else:
            y = F.adaptive_avg_pool2d(xd, 1)
        gy = rand32(g, tuple(y.shape))
        y.backward(gy.double())
        case = {"x": x, "gy": gy, "y": y, "gx": xd.grad, "params": i64([kind, k, stride, pad, int(ceil), int(cip)])}
        for key, v in case.items():
            t[f"{name}.{key}"] = v
    save("conv_pool", t)


# ---- squeeze-excite and ECA (timm's modules written out) ------------------------------------------------------
def gen_se():
    t = {}
    g = torch.Generator().manual_seed(9)
    # efficientnet SqueezeExcite(in_chs=8, rd_channels=2, act=SiLU): x * sigmoid(conv_expand(silu(conv_reduce(mean))))
    x = rand32(g, (2, 8, 5, 6))
    w1, b1 = rand32(g, (2, 8, 1, 1)), rand32(g, (2,))
    w2, b2 = rand32(g, (8, 2, 1, 1)), rand32(g, (8,))
    xd, w1d, b1d, w2d, b2d = map(leaf64, (x, w1, b1, w2, b2))
    s = xd.mean((2, 3), keepdim=True)
    s = F.conv2d(F.silu(F.conv2d(s, w1d, b1d)), w2d, b2d)
    y = xd * torch.sigmoid(s)
    gy = rand32(g, tuple(y.shape))
    y.backward(gy.double())
    for k, v in {"x": x, "conv_reduce.weight": w1, "conv_reduce.bias": b1, "conv_expand.weight": w2,
                 "conv_expand.bias": b2, "gy": gy, "y": y, "gx": xd.grad, "g_conv_reduce.weight": w1d.grad,
                 "g_conv_reduce.bias": b1d.grad, "g_conv_expand.weight": w2d.grad,
                 "g_conv_expand.bias": b2d.grad}.items():
        t[f"se.{k}"] = v
    # timm EcaModule(channels=256): k = 5; y = x * sigmoid(conv1d(mean_hw(x) as [N, 1, C], pad 2, no bias))
    x = rand32(g, (2, 256, 2, 2))
    w = rand32(g, (1, 1, 5))
    xd, wd = leaf64(x), leaf64(w)
    z = F.conv1d(xd.mean((2, 3)).view(2, 1, -1), wd, padding=2)
    y = xd * torch.sigmoid(z).view(2, -1, 1, 1).expand_as(xd)
    gy = rand32(g, tuple(y.shape))
    y.backward(gy.double())
    for k, v in {"x": x, "conv.weight": w, "gy": gy, "y": y, "gx": xd.grad, "g_conv.weight": wd.grad}.items():
        t[f"eca.{k}"] = v
    save("conv_se", t)


if __name__ == "__main__":
    torch.set_num_threads(1)
    gen_conv2d()
    gen_ws()
    gen_bn()
    gen_act()
    gen_pool()
    gen_se()
