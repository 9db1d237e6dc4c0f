#!/usr/bin/env python3
"""PyTorch reference for `ssa bench`: the same training steps, timed on the same machine.

Times, at batch 128 on 32x32 input with VGG-13 widths, in f32 on the CPU:
  - one end-to-end backpropagation step of the dense VGG-13 (BatchNorm, Adam);
  - one SSA step, at full rank and at 30% rank. Every conv unit is a k x 1 then 1 x k
    convolution pair built from U, s, V, on its detached input. Its loss is the broadcast-error
    surrogate plus the alignment and orthogonality losses. The U and V gradients get the Stiefel
    tangent projection, and Adam applies the update;
  - a 2048^3 matrix product, for the machine's rate.

Optional: `python3 -m venv ../torch-venv && ../torch-venv/bin/pip install torch numpy` (PyPI's
wheel brings CUDA libraries too, about 3 GB on disk; the CPU path does not use them), then
`../torch-venv/bin/python scripts/torch_reference.py --threads 2`. Random inputs stand in for CIFAR-10 images;
the step time does not depend on pixel values.
"""

import argparse
import math
import time

import torch
import torch.nn.functional as F

VGG13 = [(64, False), (64, True), (128, False), (128, True), (256, False), (256, True),
         (512, False), (512, True), (512, False), (512, True)]
CLASSES = 10
K = 3


def dense_vgg13():
    layers, channels = [], 3
    for out, pool in VGG13:
        layers += [torch.nn.Conv2d(channels, out, K, padding=1), torch.nn.BatchNorm2d(out), torch.nn.ReLU()]
        if pool:
            layers.append(torch.nn.MaxPool2d(2))
        channels = out
    layers += [torch.nn.Flatten(), torch.nn.Linear(channels, CLASSES)]
    return torch.nn.Sequential(*layers)


class ConvPair(torch.nn.Module):
    """A k x k convolution in SVD form: rows of U index (c, i), rows of V index (f, j)."""

    def __init__(self, c, f, fraction):
        super().__init__()
        full = K * min(c, f)
        r = max(1, math.ceil(fraction * full))
        w = torch.empty(c * K, f * K).uniform_(-1 / math.sqrt(c * K * K), 1 / math.sqrt(c * K * K))
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        self.u = torch.nn.Parameter(u[:, :r].contiguous())
        self.s = torch.nn.Parameter(s[:r].contiguous())
        self.v = torch.nn.Parameter(vh[:r].t().contiguous())
        b = torch.randn(c * K, f * K)
        b = b / b.norm(dim=0, keepdim=True)
        ub, _, vbh = torch.linalg.svd(b, full_matrices=False)
        self.register_buffer("u_b", ub[:, :r].contiguous())
        self.register_buffer("v_b", vbh[:r].t().contiguous())
        self.bias = torch.nn.Parameter(torch.zeros(f))
        self.c, self.f, self.r = c, f, r

    def forward(self, x):
        k1 = (self.u * self.s).reshape(self.c, K, self.r).permute(2, 0, 1).unsqueeze(-1)
        k2 = self.v.reshape(self.f, K, self.r).permute(0, 2, 1).unsqueeze(2)
        h = F.conv2d(x, k1, padding=(1, 0))
        return F.conv2d(h, k2, bias=self.bias, padding=(0, 1))

    def local_terms(self, beta, gamma):
        align = (self.u - self.u_b).pow(2).sum() + (self.v - self.v_b).pow(2).sum()
        eye = torch.eye(self.r)
        orth = ((self.u.t() @ self.u - eye).pow(2).sum() + (self.v.t() @ self.v - eye).pow(2).sum()) / self.r ** 2
        return beta * align + gamma * orth


class SsaUnit(torch.nn.Module):
    def __init__(self, c, f, pool, fraction):
        super().__init__()
        self.conv = ConvPair(c, f, fraction)
        self.bn = torch.nn.BatchNorm2d(f)
        self.pool = pool

    def forward(self, x):
        h = F.relu(self.bn(self.conv(x)))
        return F.max_pool2d(h, 2) if self.pool else h


def ssa_vgg13(fraction):
    units, channels = [], 3
    for out, pool in VGG13:
        units.append(SsaUnit(channels, out, pool, fraction))
        channels = out
    return torch.nn.ModuleList(units), torch.nn.Linear(channels, CLASSES)


def project_tangent(x, g):
    xtg = x.t() @ g
    return g - x @ (0.5 * (xtg + xtg.t()))


def ssa_step(units, classifier, broadcast, optimizer, images, labels, beta=1e-3, gamma=1e-2):
    optimizer.zero_grad(set_to_none=True)
    outputs, h = [], images
    for unit in units:
        out = unit(h)
        outputs.append(out)
        h = out.detach()
    logits = classifier(h.flatten(1))
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    error = (F.softmax(logits.detach(), 1) - F.one_hot(labels, CLASSES).float())
    n = images.shape[0]
    for unit, out, d in zip(units, outputs, broadcast):
        signal = (error @ d).reshape(out.shape)
        local = (out * signal).sum() / n + unit.conv.local_terms(beta, gamma)
        local.backward()
        for p in (unit.conv.u, unit.conv.v):
            p.grad = project_tangent(p.detach(), p.grad)
    optimizer.step()


def bp_step(model, optimizer, images, labels):
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()
    optimizer.step()


def timed(step, warmup, steps):
    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = args.batch_size
    images = torch.randn(n, 3, 32, 32)
    labels = torch.randint(0, CLASSES, (n,))

    rows = []
    model = dense_vgg13()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    seconds = timed(lambda: bp_step(model, optimizer, images, labels), 1, args.steps)
    rows.append(("bp", "dense", seconds))

    for fraction, label in ((1.0, "full"), (0.3, "30%")):
        units, classifier = ssa_vgg13(fraction)
        shapes = []
        h = images
        with torch.no_grad():
            for unit in units:
                h = unit(h)
                shapes.append(h[0].numel())
        broadcast = []
        for size in shapes:
            d = torch.randn(CLASSES, size)
            broadcast.append(d / d.norm(dim=1, keepdim=True))
        params = list(units.parameters()) + list(classifier.parameters())
        optimizer = torch.optim.Adam(params, lr=1e-3)
        seconds = timed(lambda: ssa_step(units, classifier, broadcast, optimizer, images, labels), 1, args.steps)
        rows.append(("ssa", label, seconds))

    print(f"PyTorch {torch.__version__}, {args.threads} threads, batch {n}, VGG-13 widths, 32x32 input")
    print("| rule | rank | ms/step | images/s |")
    print("| --- | --- | ---: | ---: |")
    for rule, rank, seconds in rows:
        print(f"| {rule} | {rank} | {1e3 * seconds:.0f} | {n / seconds:.1f} |")
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    seconds = timed(lambda: a @ b, 1, 3)
    print(f"\n2048^3 f32 matrix product: {2 * 2048 ** 3 / seconds / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
