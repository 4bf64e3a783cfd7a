#!/usr/bin/python3
"""Golden vectors of the model zoo, from PyTorch 1.13 + torchvision 0.14 (Debian; run with /usr/bin/python3).

Writes tests/golden/data/models_*.safetensors, read by tests/models/test_models_golden.cpp. Each file holds
the model's weights under "model.<key>" and the reference under "golden.<name>" (input, features, logits).
Weights are float32 (what the float32 run loads exactly); references are computed in float64 from those
values and stored as float64, so one file serves the float32 test (relative error <= 1e-4 of the largest
logit) and a float64 run (tight). Random init, then BatchNorm statistics/affine and NF gains randomised so no
layer is an identity; eval mode; fixed seeds (rerunning reproduces the files bit for bit).

  models_tv_effnet   torchvision's EfficientNet (B0 stage table) at width 0.25 / depth 0.5, 10 classes —
                     torchvision's own module, its own state_dict keys (the C++ side maps them with
                     models::torchvision_efficientnet_key); input 2x3x64x64. Also "golden.logits_tf": the same
                     weights run as a TF port (every conv TF-"same" padded with F.pad, BN eps 1e-3), the
                     reference for tf_efficientnet_*.
  models_nf_dm       an NFNet written here from the papers' formulas (not timm's code, which is not installed):
                     scaled weight standardisation, gamma in the activations, TF-same padding, deep stem,
                     grouped bottleneck with the extra 3x3, SE x 2, skipinit gain, alpha/beta bookkeeping,
                     DownsampleAvg shortcut. Reduced dm_nfnet_f0 config (see NF_CASES). Input 2x3x37x37 (odd).
  models_nf_l        the same reference in nfnet_l0 form: SiLU, gamma folded into the weights, symmetric
                     padding, ECA attention, no skipinit (conv3 gains randomised instead of 0).
  models_nf_resnet   nf_resnet form: ReLU, 7x7 stem + 3x3/2 max pool, no attention, no final conv.

--full-b0 PATH: also export torchvision's full efficientnet_b0 (1000 classes, 21 MB; not committed) with a
2x3x224x224 input, for the `slow` test models_slow (FullEfficientNetB0.MatchesTorchvision), which looks for
the file at $ARCLIGHT_FULL_B0_GOLDEN or <build>/golden/efficientnet_b0_full.safetensors (docs/WEIGHTS.md).
"""
import argparse
import json
import math
import os
import struct

import torch
import torch.nn.functional as F

from torchvision.models import efficientnet as tv_effnet

from golden_io import save_safetensors

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def save(path, tensors, metadata=None):
    save_safetensors(path, tensors, metadata)
    print("wrote", path, os.path.getsize(path), "bytes")


# ---- torchvision EfficientNet ----------------------------------------------------------------------------

def randomise_bn(model, gen):
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=gen) + 0.5
            m.bias.data = torch.randn(c, generator=gen) * 0.1
            m.running_mean.data = torch.randn(c, generator=gen) * 0.1
            m.running_var.data = torch.rand(c, generator=gen) + 0.5
            m.num_batches_tracked.fill_(7)


def as_tf_port(model):
    """Runs every conv with TF "same" padding (F.pad before a padding-0 conv) and BN eps 1e-3."""
    def pre_hook(conv, inputs):
        (x,) = inputs
        k, s = conv.kernel_size[0], conv.stride[0]
        ih, iw = x.shape[-2:]
        ph = max((math.ceil(ih / s) - 1) * s + k - ih, 0)
        pw = max((math.ceil(iw / s) - 1) * s + k - iw, 0)
        return (F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)),)

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.padding = (0, 0)
            m.register_forward_pre_hook(pre_hook)
        elif isinstance(m, torch.nn.BatchNorm2d):
            m.eps = 1e-3
    return model


def tv_reference(model, x):
    m = model.double().eval()
    with torch.no_grad():
        feats = m.features(x.double())
        logits = m.classifier(torch.flatten(m.avgpool(feats), 1))
    return feats, logits


def export_tv(model, x, path, with_tf):
    state = {"model." + k: v.clone() for k, v in model.state_dict().items()}  # float32 weights, as stored
    feats, logits = tv_reference(model, x)
    out = dict(state)
    out["golden.input"] = x
    out["golden.features"] = feats
    out["golden.logits"] = logits
    if with_tf:
        _, logits_tf = tv_reference(as_tf_port(model), x)
        out["golden.logits_tf"] = logits_tf
    save(path, out, {"source": "torchvision %s efficientnet" % __import__("torchvision").__version__})


def gen_tv_reduced():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    setting, last = tv_effnet._efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.5)
    model = tv_effnet.EfficientNet(setting, 0.2, last_channel=last, num_classes=10)
    randomise_bn(model, gen)
    x = torch.randn(2, 3, 64, 64, generator=gen)
    export_tv(model, x, os.path.join(OUT, "models_tv_effnet.safetensors"), with_tf=True)


def gen_tv_full(path):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2)
    model = tv_effnet.efficientnet_b0(weights=None)
    randomise_bn(model, gen)
    x = torch.randn(2, 3, 224, 224, generator=gen)
    export_tv(model, x, path, with_tf=False)


# ---- NFNet reference from the papers' formulas -----------------------------------------------------------

GAMMA = {"relu": 1.7139588594436646, "gelu": 1.7015043497085571, "silu": 1.7881293296813965}
ACT = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu}

# Keep in sync with tests/models/test_models_golden.cpp (nf_case()).
NF_CASES = {
    "dm": dict(act="gelu", gamma_in_act=True, same=True, skipinit=True, attn="se", se_ratio=0.5, stem="deep_quad",
               stem_chs=32, channels=(32, 48, 64, 64), depths=(1, 2, 1, 1), group=8, bottle=0.5, extra_conv=True,
               num_features=96, classes=5),
    "l": dict(act="silu", gamma_in_act=False, same=False, skipinit=False, attn="eca", se_ratio=0.25, stem="deep_quad",
              stem_chs=32, channels=(32, 48, 64, 64), depths=(1, 2, 1, 1), group=8, bottle=0.25, extra_conv=True,
              num_features=96, classes=5),
    "resnet": dict(act="relu", gamma_in_act=False, same=False, skipinit=False, attn=None, se_ratio=0.0,
                   stem="7x7_pool", stem_chs=16, channels=(32, 64, 64, 128), depths=(1, 1, 2, 1), group=0, bottle=0.25,
                   extra_conv=False, num_features=0, classes=5),
}
ALPHA, EPS, ATTN_GAIN = 0.2, 1e-5, 2.0


class Params:
    """Creates each parameter on first use (float32 values, deterministic order) and hands out float64 copies."""

    def __init__(self, seed):
        self.gen = torch.Generator().manual_seed(seed)
        self.f32 = {}

    def get(self, name, shape, kind):
        if name not in self.f32:
            g = self.gen
            if kind == "weight":
                fan_in = math.prod(shape[1:])
                v = torch.randn(tuple(shape), generator=g) / math.sqrt(fan_in)
            elif kind == "bias":
                v = torch.randn(tuple(shape), generator=g) * 0.1
            else:  # gains: around 1, never 0
                v = torch.rand(tuple(shape), generator=g) + 0.5
            self.f32[name] = v.float()
        return self.f32[name].double()


def make_div(v, divisor=8, round_limit=0.9):
    nv = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return nv + divisor if nv < round_limit * v else nv


def pad_same(x, k, s):
    ih, iw = x.shape[-2:]
    ph = max((math.ceil(ih / s) - 1) * s + k - ih, 0)
    pw = max((math.ceil(iw / s) - 1) * s + k - iw, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


def nf_forward(cfg, P, x):
    gamma = GAMMA[cfg["act"]]
    conv_gamma = 1.0 if cfg["gamma_in_act"] else gamma

    def act(t, scale=1.0):
        return ACT[cfg["act"]](t) * ((gamma if cfg["gamma_in_act"] else 1.0) * scale)

    def conv(t, name, cin, cout, k, stride=1, groups=1):
        w = P.get(name + ".weight", (cout, cin // groups, k, k), "weight")
        b = P.get(name + ".bias", (cout,), "bias")
        g = P.get(name + ".gain", (cout, 1, 1, 1), "gain")
        fan_in = w[0].numel()
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
        # Scaled WS: W_hat = gain * gamma * (W - mean) / (sqrt(var + eps) * sqrt(fan_in)).
        w_hat = g * conv_gamma * (w - mean) / (torch.sqrt(var + EPS) * math.sqrt(fan_in))
        if cfg["same"]:
            return F.conv2d(pad_same(t, k, stride), w_hat, b, stride, 0, 1, groups)
        return F.conv2d(t, w_hat, b, stride, ((stride - 1) + (k - 1)) // 2, 1, groups)

    c = cfg["stem_chs"]
    if cfg["stem"] == "deep_quad":
        h = conv(x, "stem.conv1", x.shape[1], c // 8, 3, 2)
        h = conv(act(h), "stem.conv2", c // 8, c // 4, 3)
        h = conv(act(h), "stem.conv3", c // 4, c // 2, 3)
        h = conv(act(h), "stem.conv4", c // 2, c, 3, 2)
    else:
        h = conv(x, "stem.conv", x.shape[1], c, 7, 2)
        h = F.max_pool2d(h, 3, 2, 1)
    expected_var, prev = 1.0, c
    for si, depth in enumerate(cfg["depths"]):
        for bi in range(depth):
            out = cfg["channels"][si]
            mid = make_div(out * cfg["bottle"])  # channel rounding as timm (multiples of 8)
            groups = mid // cfg["group"] if cfg["group"] else 1
            mid = cfg["group"] * groups if cfg["group"] else mid
            stride = (1 if si == 0 else 2) if bi == 0 else 1
            beta = 1.0 / math.sqrt(expected_var)
            pre = "stages.%d.%d." % (si, bi)
            skip_gain = P.get(pre + "skipinit_gain", (), "gain") if cfg["skipinit"] else None
            o = act(h, beta)
            if prev != out or stride != 1:
                sc = F.avg_pool2d(o, 2, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else o
                sc = conv(sc, pre + "downsample.conv", prev, out, 1)
            else:
                sc = h
            r = conv(o, pre + "conv1", prev, mid, 1)
            r = conv(act(r), pre + "conv2", mid, mid, 3, stride, groups)
            if cfg["extra_conv"]:
                r = conv(act(r), pre + "conv2b", mid, mid, 3, 1, groups)
            r = conv(act(r), pre + "conv3", mid, out, 1)
            if cfg["attn"] == "se":
                rd = make_div(out * cfg["se_ratio"], round_limit=0.0)
                s = r.mean((2, 3), keepdim=True)
                s = F.relu(F.conv2d(s, P.get(pre + "attn_last.fc1.weight", (rd, out, 1, 1), "weight"),
                                    P.get(pre + "attn_last.fc1.bias", (rd,), "bias")))
                s = torch.sigmoid(F.conv2d(s, P.get(pre + "attn_last.fc2.weight", (out, rd, 1, 1), "weight"),
                                           P.get(pre + "attn_last.fc2.bias", (out,), "bias")))
                r = ATTN_GAIN * (r * s)
            elif cfg["attn"] == "eca":
                t = int(abs(math.log2(out) + 1) / 2)
                k = max(t if t % 2 else t + 1, 3)
                w = P.get(pre + "attn_last.conv.weight", (1, 1, k), "weight")
                y = F.conv1d(r.mean((2, 3)).unsqueeze(1), w, padding=(k - 1) // 2)
                r = ATTN_GAIN * (r * torch.sigmoid(y).view(r.shape[0], out, 1, 1))
            if skip_gain is not None:
                r = r * skip_gain
            h = r * ALPHA + sc
            if bi == 0:
                expected_var = 1.0
            expected_var += ALPHA ** 2
            prev = out
    if cfg["num_features"]:
        h = conv(h, "final_conv", prev, cfg["num_features"], 1)
        prev = cfg["num_features"]
    feats = act(h)
    w = P.get("head.fc.weight", (cfg["classes"], prev), "weight")
    b = P.get("head.fc.bias", (cfg["classes"],), "bias")
    return feats, F.linear(feats.mean((2, 3)), w, b)


def gen_nf(case, seed):
    cfg = NF_CASES[case]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 37, 37, generator=gen)
    P = Params(seed + 100)
    with torch.no_grad():
        feats, logits = nf_forward(cfg, P, x.double())
    out = {"model." + k: v for k, v in P.f32.items()}
    out["golden.input"] = x
    out["golden.features"] = feats
    out["golden.logits"] = logits
    save(os.path.join(OUT, "models_nf_%s.safetensors" % case), out, {"source": "gen_models.py NF reference, " + case})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full-b0", metavar="PATH", help="also export the full efficientnet_b0 (not committed)")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    gen_tv_reduced()
    for i, case in enumerate(NF_CASES):
        gen_nf(case, 10 + i)
    if args.full_b0:
        os.makedirs(os.path.dirname(os.path.abspath(args.full_b0)), exist_ok=True)
        gen_tv_full(args.full_b0)


if __name__ == "__main__":
    main()
