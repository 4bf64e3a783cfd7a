#!/usr/bin/env python3
"""The PyTorch side of bench/train_step: the same retrieval model and training step, for a side-by-side run.

Model: torchvision's efficientnet_b0 features (written out in this file when torchvision is missing) (3-channel input; the same block table as arclight's, stochastic
depth 0.2) -> GeM(p=3, learnable) -> Linear(1280->512) -> BatchNorm1d -> ArcMargin(s=30, m=0.5) ->
label-smoothing cross-entropy (eps=0.1), AdamW (lr 1e-3, weight decay 1e-2), random inputs and labels.
Prints one line:  train_images_per_s=<x> embed_images_per_s=<y> peak_rss_mb=<z>

Run with Debian's python3-torch (/usr/bin/python3 on the dev machine):
  /usr/bin/python3 bench/torch_train_step.py --img 32 --batch 128 --threads 2 --steps 20 --classes 10
On a GPU (beside `train_step --device cuda [--amp bf16|fp16]`):
  python3 bench/torch_train_step.py --device cuda --img 224 --batch 128 --steps 20 --classes 1000 [--amp bf16|fp16]
fp32 on the GPU is strict float32 (cuDNN's TF32 switched off, as arclight's default); --amp bf16 wraps forward and
loss in torch.autocast(dtype=torch.bfloat16); --amp fp16 in torch.autocast(dtype=torch.float16) with a
torch.cuda.amp.GradScaler (scaled backward, scaler.step / scaler.update; the skipped steps are reported).
Each step ends with loss.item(), which waits for the GPU.
A reference for measurement only: nothing in arclight's build or tests needs it.
"""
import argparse
import contextlib
import math
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    import torchvision
except ImportError:  # a machine with torch but without torchvision: the same network written out below
    torchvision = None


class MBConv(nn.Module):
    """torchvision's MBConv: [1x1 expand + BN + SiLU] -> depthwise kxk + BN + SiLU -> SE (SiLU, sigmoid, squeeze =
    in/4) -> 1x1 project + BN, residual with stochastic depth (row mode) when the shape is kept."""

    def __init__(self, cin, cout, k, stride, expand, drop):
        super().__init__()
        mid = cin * expand
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU()]
        layers += [nn.Conv2d(mid, mid, k, stride, (k - 1) // 2, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.SiLU()]
        self.pre = nn.Sequential(*layers)
        sq = max(1, cin // 4)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(mid, sq, 1), nn.SiLU(), nn.Conv2d(sq, mid, 1),
                                nn.Sigmoid())
        self.post = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout
        self.drop = drop

    def forward(self, x):
        h = self.pre(x)
        h = self.post(h * self.se(h))
        if not self.residual:
            return h
        if self.training and self.drop > 0:
            keep = 1.0 - self.drop
            mask = torch.empty(h.shape[0], 1, 1, 1, device=h.device, dtype=h.dtype).bernoulli_(keep) / keep
            h = h * mask
        return h + x


def efficientnet_b0_features():
    """torchvision.models.efficientnet_b0(weights=None).features, written out (stochastic depth 0.2 linear over the
    16 blocks), for machines without torchvision."""
    if torchvision is not None:
        return torchvision.models.efficientnet_b0(weights=None).features
    table = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
             (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]
    total = sum(t[5] for t in table)
    stages = [nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.SiLU())]
    idx = 0
    for expand, k, stride, cin, cout, n in table:
        blocks = []
        for i in range(n):
            blocks.append(MBConv(cin if i == 0 else cout, cout, k, stride if i == 0 else 1, expand, 0.2 * idx / total))
            idx += 1
        stages.append(nn.Sequential(*blocks))
    stages.append(nn.Sequential(nn.Conv2d(320, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.SiLU()))
    return nn.Sequential(*stages)


class GeM(nn.Module):
    def __init__(self, p=3.0, eps=1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x):
        return F.avg_pool2d(x.clamp(min=self.eps).pow(self.p), (x.size(-2), x.size(-1))).pow(1.0 / self.p).flatten(1)


class ArcMargin(nn.Module):
    """ArcFace logits with the theta + m > pi fallback (cos - m sin m), as arclight's ArcMargin."""

    def __init__(self, dim, classes, s=30.0, m=0.5):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(classes, dim))
        nn.init.xavier_uniform_(self.weight)
        self.s, self.m = s, m
        self.cos_m, self.sin_m = math.cos(m), math.sin(m)
        self.th, self.mm = math.cos(math.pi - m), math.sin(math.pi - m) * m

    def forward(self, x, labels):
        cosine = F.linear(F.normalize(x), F.normalize(self.weight))
        sine = torch.sqrt((1.0 - cosine * cosine).clamp(0, 1))
        phi = cosine * self.cos_m - sine * self.sin_m
        phi = torch.where(cosine > self.th, phi, cosine - self.mm)
        one_hot = F.one_hot(labels, cosine.size(1)).to(cosine.dtype)
        return self.s * (one_hot * phi + (1.0 - one_hot) * cosine)


class Net(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.backbone = efficientnet_b0_features()
        self.pool = GeM()
        self.fc = nn.Linear(1280, 512)
        self.bn = nn.BatchNorm1d(512)
        self.head = ArcMargin(512, classes)

    def features(self, x):
        return self.bn(self.fc(self.pool(self.backbone(x))))

    def forward(self, x, labels):
        return self.head(self.features(x), labels)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--img", type=int, default=32)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--embed-steps", type=int, default=0)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off")
    a = ap.parse_args()
    if a.amp != "off" and a.device != "cuda":
        ap.error("--amp bf16 / fp16 need --device cuda")
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    dev = torch.device(a.device)
    if a.device == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    net = Net(a.classes).to(dev)
    decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in net.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 1e-2}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3)
    x = torch.randn(a.batch, 3, a.img, a.img).to(dev)
    y = torch.randint(0, a.classes, (a.batch,)).to(dev)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(a.amp)
    amp = torch.autocast(device_type="cuda", dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    # Disabled (a pass-through) unless fp16: scale() returns the loss, step() calls opt.step(), update() does nothing.
    # torch.amp.GradScaler("cuda") where it exists (torch >= 2.3; the old spelling warns there), else torch.cuda.amp's.
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        scaler = torch.amp.GradScaler("cuda", enabled=a.amp == "fp16")
    else:
        scaler = torch.cuda.amp.GradScaler(enabled=a.amp == "fp16")

    def step():
        with amp:
            loss = F.cross_entropy(net(x, y).float(), y, label_smoothing=0.1)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=False)
        return loss.item()

    net.train()
    for _ in range(a.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    train_s = time.perf_counter() - t0
    if not math.isfinite(loss):
        print(f"torch_train_step: the loss became {loss}", file=sys.stderr)
        return 1

    embed_steps = a.embed_steps or a.steps
    net.eval()
    with torch.no_grad(), amp:
        for _ in range(min(a.warmup, 2)):
            F.normalize(net.features(x))
        t0 = time.perf_counter()
        checksum = 0.0
        for _ in range(embed_steps):
            checksum += F.normalize(net.features(x)).sum().item()
        embed_s = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"train_images_per_s={a.steps * a.batch / train_s:.1f} embed_images_per_s={embed_steps * a.batch / embed_s:.1f} "
          f"peak_rss_mb={peak_mb:.1f}")
    print(f"torch_train_step: torch {torch.__version__}, {a.device} {a.amp}, img {a.img}, batch {a.batch}, {a.threads} threads, "
          f"final loss {loss:.4f}", file=sys.stderr)
    if scaler.is_enabled():
        print(f"torch_train_step: loss scale {scaler.get_scale():g}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
