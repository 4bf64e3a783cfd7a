#!/usr/bin/python3
"""Golden vectors of the retrieval head, from PyTorch 1.13 (Debian's python3-torch; run with /usr/bin/python3).

Writes tests/golden/data/head_*.safetensors, read by tests/head/test_head_golden.cpp:
  head_gem          GeM pooling (timm's formula: avg_pool2d(x.clamp(min=eps).pow(p)).pow(1/p)), y, dL/dx, dL/dp
  head_arc_margin   ArcMargin, the seed's reference formula (see arc_margin_reference below), ArcFace with the
                    theta+m>pi fallback and with easy_margin: logits, dL/dx, dL/dW
  head_ce           F.cross_entropy with label_smoothing and weight, reductions none/mean/sum, and +-1e4 logits
  head_arc_ce       the whole head: raw embedding + W -> ArcMargin -> F.cross_entropy(weight, label_smoothing)
  head_optim        torch.optim.SGD (momentum 0.9, Nesterov, per-group weight decay) and torch.optim.AdamW
                    (and amsgrad) parameters after each of 5 steps with given gradients
  head_schedule     timm CosineLRScheduler lr over 50 steps -- timm is NOT installed here: the formula is
                    re-implemented below from timm's documented semantics (timm_cosine_lr), clearly a
                    re-implementation, not timm's code
Inputs are stored as float32 (the values our float32 run sees exactly); references are computed in float64
from those values and stored as float64, so one file serves the float32 test (float tolerances) and the
float64 test (tight tolerances). Safetensors is written by hand (8-byte LE header size + JSON + raw LE data),
no extra packages. Deterministic: fixed torch seeds; rerunning reproduces the committed files bit for bit.
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


def leaf64(t32):
    return t32.double().clone().requires_grad_(True)


# ---- GeM ---------------------------------------------------------------------------------------------
def gem_case(seed, shape, p, eps):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(shape, generator=g) * 3.5 - 0.5).float()  # some values below eps: the clamp is exercised
    p32 = torch.tensor([p], dtype=torch.float32)
    gy = torch.randn(shape[:2], generator=g).float()
    xd, pd = leaf64(x), leaf64(p32)
    y = F.avg_pool2d(xd.clamp(min=eps).pow(pd), (xd.size(-2), xd.size(-1))).pow(1.0 / pd).flatten(1)
    y.backward(gy.double())
    return {"x": x, "p": p32, "gy": gy, "y": y, "gx": xd.grad, "gp": pd.grad}


def gen_gem():
    t = {}
    for prefix, (seed, shape, p) in {"a_": (1, (2, 3, 4, 5), 3.0), "b_": (2, (3, 2, 7, 7), 1.7)}.items():
        for k, v in gem_case(seed, shape, p, 1e-6).items():
            t[prefix + k] = v
    save("head_gem", t, {"eps": "1e-6", "formula": "avg_pool2d(x.clamp(min=eps).pow(p)).pow(1/p)"})


# ---- ArcMargin (the seed's reference module, written out) -------------------------------------------------
def arc_margin_reference(x, W, label, s, m, easy_margin):
    cos_m, sin_m = math.cos(m), math.sin(m)
    th, mm = math.cos(math.pi - m), math.sin(math.pi - m) * m
    cosine = F.linear(F.normalize(x), F.normalize(W))
    sine = torch.sqrt((1.0 - torch.pow(cosine, 2)).clamp(0, 1))
    phi = cosine * cos_m - sine * sin_m
    if easy_margin:
        phi = torch.where(cosine > 0, phi, cosine)
    else:
        phi = torch.where(cosine > th, phi, cosine - mm)
    one_hot = torch.zeros(cosine.size(), dtype=cosine.dtype)
    one_hot.scatter_(1, label.view(-1, 1).long(), 1)
    return ((one_hot * phi) + ((1.0 - one_hot) * cosine)) * s, cosine


def head_inputs(seed, n, d, k):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(k, d, generator=g).float()
    labels = torch.randint(0, k, (n,), generator=g)
    x = torch.randn(n, d, generator=g)
    # Rows 0 and 1 point almost opposite their class centre: cos_y ~ -0.98 < th = cos(pi - m), the fallback.
    for i in (0, 1):
        x[i] = -W[labels[i]] * 2.0 + 0.1 * torch.randn(d, generator=g)
    # Row 2 close to its centre: cos_y near 1 (large but finite derivative).
    x[2] = W[labels[2]] * 1.5 + 0.02 * torch.randn(d, generator=g)
    return x.float(), W, labels


def gen_arc_margin():
    x, W, labels = head_inputs(3, 8, 16, 10)
    g = torch.Generator().manual_seed(4)
    R = torch.randn(8, 10, generator=g).float()
    t = {"x": x, "w": W, "labels": labels, "r": R}
    for prefix, easy in (("arc_", False), ("easy_", True)):
        xd, Wd = leaf64(x), leaf64(W)
        logits, cosine = arc_margin_reference(xd, Wd, labels, 30.0, 0.5, easy)
        (logits * R.double()).sum().backward()
        t[prefix + "logits"] = logits
        t[prefix + "gx"] = xd.grad
        t[prefix + "gw"] = Wd.grad
        t["cos"] = cosine
    save("head_arc_margin", t, {"s": "30", "m": "0.5", "loss": "sum(logits * r)"})


# ---- label-smoothing cross-entropy -------------------------------------------------------------------------
def gen_ce():
    g = torch.Generator().manual_seed(5)
    z = (torch.randn(6, 7, generator=g) * 3).float()
    labels = torch.randint(0, 7, (6,), generator=g)
    weight = (torch.rand(7, generator=g) * 1.5 + 0.25).float()
    zbig = torch.tensor([[1e4, -1e4, 9990.0, 0.0], [-1e4, 1e4, 1e4 - 1, 5.0], [3.0, -2.0, 1e4, -1e4]]).float()
    ybig = torch.tensor([0, 2, 3])
    up_none = torch.rand(6, generator=g).float() + 0.5
    up_none_big = torch.rand(3, generator=g).float() + 0.5
    t = {"z": z, "labels": labels, "weight": weight, "zbig": zbig, "ybig": ybig, "up_none": up_none,
         "up_none_big": up_none_big}
    up_scalar = 0.7
    variants = {"ls_w": (0.1, True), "plain": (0.0, False), "ls": (0.25, False)}
    for vname, (eps, weighted) in variants.items():
        for red in ("none", "mean", "sum"):
            for zname, zz, yy, upn in (("", z, labels, up_none), ("big_", zbig, ybig, up_none_big)):
                zd = leaf64(zz)
                wk = weight[: zz.shape[1]].double()  # the +-1e4 case has 4 classes: the first 4 weights
                loss = F.cross_entropy(zd, yy, weight=wk if weighted else None, label_smoothing=eps,
                                       reduction=red)
                loss.backward(upn.double() if red == "none" else torch.tensor(up_scalar, dtype=torch.float64))
                key = f"{zname}{vname}_{red}"
                t[key + "_loss"] = loss
                t[key + "_grad"] = zd.grad
    save("head_ce", t, {"upstream_scalar": str(up_scalar)})


# ---- the whole head ------------------------------------------------------------------------------------------
def gen_arc_ce():
    x, W, labels = head_inputs(6, 12, 16, 9)
    g = torch.Generator().manual_seed(7)
    weight = (torch.rand(9, generator=g) + 0.5).float()
    xd, Wd = leaf64(x), leaf64(W)
    logits, _ = arc_margin_reference(xd, Wd, labels, 45.0, 0.4, False)
    loss = F.cross_entropy(logits, labels, weight=weight.double(), label_smoothing=0.1)
    loss.backward()
    save("head_arc_ce", {"x": x, "w": W, "labels": labels, "weight": weight, "loss": loss, "gx": xd.grad,
                         "gw": Wd.grad}, {"s": "45", "m": "0.4", "label_smoothing": "0.1", "reduction": "mean"})


# ---- optimizers ------------------------------------------------------------------------------------------------
def gen_optim():
    g = torch.Generator().manual_seed(8)
    p0 = torch.randn(4, 3, generator=g).float()
    p1 = torch.randn(3, generator=g).float()
    g0 = torch.randn(5, 4, 3, generator=g).float()
    g1 = torch.randn(5, 3, generator=g).float()
    t = {"p0": p0, "p1": p1, "g0": g0, "g1": g1}

    def run(name, make):
        a, b = p0.double().clone().requires_grad_(True), p1.double().clone().requires_grad_(True)
        opt = make(a, b)
        traj0, traj1 = [], []
        for step in range(5):
            a.grad = g0[step].double().clone()
            b.grad = g1[step].double().clone()
            opt.step()
            traj0.append(a.detach().clone())
            traj1.append(b.detach().clone())
        t[name + "_p0"] = torch.stack(traj0)
        t[name + "_p1"] = torch.stack(traj1)

    run("sgd", lambda a, b: torch.optim.SGD([{"params": [a], "weight_decay": 1e-2}, {"params": [b], "weight_decay": 0.0}],
                                            lr=0.1, momentum=0.9, nesterov=True))
    run("adamw", lambda a, b: torch.optim.AdamW([{"params": [a], "weight_decay": 0.05},
                                                 {"params": [b], "weight_decay": 0.0}], lr=0.01, betas=(0.9, 0.999),
                                                eps=1e-8))
    run("amsgrad", lambda a, b: torch.optim.AdamW([{"params": [a], "weight_decay": 0.05},
                                                   {"params": [b], "weight_decay": 0.0}], lr=0.01, betas=(0.9, 0.99),
                                                  eps=1e-8, amsgrad=True))
    save("head_optim", t, {"sgd": "lr 0.1 momentum 0.9 nesterov, wd 1e-2 / 0",
                           "adamw": "lr 0.01 betas (0.9, 0.999) eps 1e-8 wd 0.05 / 0",
                           "amsgrad": "lr 0.01 betas (0.9, 0.99) eps 1e-8 wd 0.05 / 0 amsgrad"})


# ---- schedule --------------------------------------------------------------------------------------------------
def timm_cosine_lr(t, base, t_initial, lr_min=0.0, cycle_mul=1.0, cycle_decay=1.0, cycle_limit=1, warmup_t=0,
                   warmup_lr_init=0.0, warmup_prefix=False, k_decay=1.0):
    """RE-IMPLEMENTATION (timm is not installed) of timm.scheduler.CosineLRScheduler's lr at time t, written from
    its documented behaviour: linear warm-up from warmup_lr_init to base over warmup_t; then (clock shifted by
    warmup_t when warmup_prefix) cycles of length t_initial * cycle_mul**i whose peak decays by cycle_decay**i,
    each a half cosine (with k-decay exponent k on t_curr / t_i) from the peak down to lr_min; after
    cycle_limit cycles the lr stays at lr_min."""
    if t < warmup_t:
        return warmup_lr_init + t * (base - warmup_lr_init) / warmup_t
    if warmup_prefix:
        t = t - warmup_t
    if cycle_mul != 1:
        i = math.floor(math.log(1 - t / t_initial * (1 - cycle_mul), cycle_mul))
        t_i = cycle_mul ** i * t_initial
        t_curr = t - (1 - cycle_mul ** i) / (1 - cycle_mul) * t_initial
    else:
        i = t // t_initial
        t_i = t_initial
        t_curr = t - t_initial * i
    if i >= cycle_limit:
        return lr_min
    peak = base * cycle_decay ** i
    return lr_min + 0.5 * (peak - lr_min) * (1 + math.cos(math.pi * t_curr ** k_decay / t_i ** k_decay))


def gen_schedule():
    configs = {
        # the method's recipe: warm-up then one cosine over 50 steps
        "a": dict(base=2e-3, t_initial=50, lr_min=1e-6, warmup_t=5, warmup_lr_init=1e-5),
        # restarts: cycles of 10, 20, 40 with decaying peaks, a prefixed warm-up and k-decay
        "b": dict(base=0.1, t_initial=10, lr_min=1e-4, cycle_mul=2.0, cycle_decay=0.5, cycle_limit=3, warmup_t=3,
                  warmup_lr_init=1e-3, warmup_prefix=True, k_decay=1.5),
        # equal-length cycles, two of them, then lr_min
        "c": dict(base=0.05, t_initial=15, lr_min=0.0, cycle_decay=0.8, cycle_limit=2, warmup_t=2),
    }
    t = {}
    order = ["base", "t_initial", "lr_min", "cycle_mul", "cycle_decay", "cycle_limit", "warmup_t", "warmup_lr_init",
             "warmup_prefix", "k_decay"]
    defaults = dict(lr_min=0.0, cycle_mul=1.0, cycle_decay=1.0, cycle_limit=1, warmup_t=0, warmup_lr_init=0.0,
                    warmup_prefix=False, k_decay=1.0)
    for name, cfg in configs.items():
        full = dict(defaults, **cfg)
        t[name + "_config"] = torch.tensor([float(full[k]) for k in order], dtype=torch.float64)
        t[name + "_lr"] = torch.tensor([timm_cosine_lr(step, **cfg) for step in range(50)], dtype=torch.float64)
    save("head_schedule", t, {"config_order": ",".join(order),
                              "source": "re-implementation of timm CosineLRScheduler semantics (timm not installed)"})


if __name__ == "__main__":
    torch.set_default_dtype(torch.float32)
    os.makedirs(OUT, exist_ok=True)
    gen_gem()
    gen_arc_margin()
    gen_ce()
    gen_arc_ce()
    gen_optim()
    gen_schedule()
