#!/usr/bin/env python3
"""Makes the training golden run: PyTorch trains LeNet-5 (28x28 MNIST form, as Spore's zoo
defines it) from one random initialisation on fixed batches of the bundled digits, 20 steps of
SGD with momentum and, from the same initialisation, 20 steps of Adam. Computed in float64 for
a clean reference; stored as f32.

Output: tools/golden/lenet5_train.safetensors holding the initial parameters under their
PyTorch state_dict keys (OIHW, Linear [out, in]) and the per-step losses `__sgd_losses__`,
`__adam_losses__` ([20] each, the loss of the batch BEFORE that step's update, as
`loss.backward(); opt.step()` reports it), plus the hyper-parameters as 1-element tensors
(`__sgd_lr__`, `__sgd_momentum__`, `__adam_lr__`, `__batch__`, `__steps__`). Batches: step s
uses training digits [s*B, (s+1)*B) of tools/data/mnist-10k, normalised
(x/255 - 0.1307)/0.3081 (as `spore train` does). Spore's test (tests/integration/train.rs,
`matches_pytorch_golden_run`) must match every loss to 1e-4 relative.

Second, the batch-norm golden: torchvision's MobileNetV2 (width 0.25, 10 classes, classifier
dropout 0 so the run is deterministic) at 64x64, batch 8, random inputs, one SGD step in TRAIN
mode (batch statistics, running statistics updated with momentum 0.1):
tools/golden/mobilenet_v2_w025_train.safetensors holds the initial state_dict (running
statistics included), `__input__` (NCHW), `__labels__` (as f32), `__losses__` [1] and every
BatchNorm's running statistics after the step under `__final__.<key>`.

Needs: pip install torch==2.15.0 torchvision==0.29.2 safetensors numpy. Run: python3 tools/golden/make_train_golden.py
"""
import gzip
import os

import numpy as np
import torch
import torch.nn as nn
import torchvision
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data", "mnist-10k")
BATCH = 32
STEPS = 20
SGD_LR, SGD_MOMENTUM = 0.05, 0.9
ADAM_LR = 1e-3
# The batch-norm golden: one step. The forward of later steps depends on the first update,
# and MobileNetV2's is chaotic in f32: with ~10^6 ReLU6 inputs per pass some always sit within
# f32 rounding of a kink, so f32 and f64 flip different mask bits (one flipped element in the
# last layer moved Spore's second loss by 8e-4; PyTorch's own f32 run leaves its f64 run by
# 1e-3..5e-2 from the third step on). The backward is pinned by the LeNet-5 run above.
MNV2_SIZE, MNV2_BATCH, MNV2_STEPS = 64, 8, 1


class LeNet5(nn.Module):
    """LeNet-5 with conv1 padding 2, for 28x28 digits (fc1 takes 16*5*5)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


def read_idx(name):
    with gzip.open(os.path.join(DATA, name), "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def run(model, opt, x, y):
    losses = []
    for s in range(STEPS):
        xb = x[s * BATCH:(s + 1) * BATCH]
        yb = y[s * BATCH:(s + 1) * BATCH]
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def main():
    torch.manual_seed(2026)
    images = read_idx("train-images-idx3-ubyte.gz")[: BATCH * STEPS]
    labels = read_idx("train-labels-idx1-ubyte.gz")[: BATCH * STEPS]
    x = (torch.from_numpy(images.astype(np.float64)) / 255.0 - 0.1307) / 0.3081
    x = x.unsqueeze(1)  # NCHW
    y = torch.from_numpy(labels.astype(np.int64))

    init = LeNet5().double()
    state = {k: v.detach().clone() for k, v in init.state_dict().items()}

    sgd_model = LeNet5().double()
    sgd_model.load_state_dict(state)
    sgd = torch.optim.SGD(sgd_model.parameters(), lr=SGD_LR, momentum=SGD_MOMENTUM)
    sgd_losses = run(sgd_model, sgd, x, y)

    adam_model = LeNet5().double()
    adam_model.load_state_dict(state)
    adam = torch.optim.Adam(adam_model.parameters(), lr=ADAM_LR)
    adam_losses = run(adam_model, adam, x, y)

    out = {k: v.float().contiguous() for k, v in state.items()}
    out["__sgd_losses__"] = torch.tensor(sgd_losses, dtype=torch.float32)
    out["__adam_losses__"] = torch.tensor(adam_losses, dtype=torch.float32)
    for key, value in [
        ("__sgd_lr__", SGD_LR),
        ("__sgd_momentum__", SGD_MOMENTUM),
        ("__adam_lr__", ADAM_LR),
        ("__batch__", BATCH),
        ("__steps__", STEPS),
    ]:
        out[key] = torch.tensor([value], dtype=torch.float32)
    path = os.path.join(HERE, "lenet5_train.safetensors")
    save_file(out, path)
    print(f"wrote {path}")
    print("sgd losses:", " ".join(f"{v:.5f}" for v in sgd_losses))
    print("adam losses:", " ".join(f"{v:.5f}" for v in adam_losses))


def mobilenet_v2_bn():
    """MobileNetV2 in train mode: batch statistics, running statistics updated."""
    torch.manual_seed(7)
    model = torchvision.models.mobilenet_v2(width_mult=0.25, num_classes=10, dropout=0.0).double()
    gen = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                # Non-trivial starting statistics and affine terms.
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen, dtype=torch.float64) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen, dtype=torch.float64) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen, dtype=torch.float64) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen, dtype=torch.float64) * 0.1)
        # Round to f32 so PyTorch starts from exactly what Spore loads.
        for p in model.state_dict().values():
            if p.is_floating_point():
                p.copy_(p.float().double())
    init = {k: v.float().contiguous().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    x = torch.rand((MNV2_BATCH, 3, MNV2_SIZE, MNV2_SIZE), generator=gen, dtype=torch.float64).float().double()
    y = torch.arange(MNV2_BATCH) % 10
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(MNV2_STEPS):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    out = dict(init)
    out["__input__"] = x.float().contiguous()
    out["__labels__"] = y.float()
    out["__losses__"] = torch.tensor(losses, dtype=torch.float32)
    for k, v in model.state_dict().items():
        if k.endswith("running_mean") or k.endswith("running_var"):
            out["__final__." + k] = v.float().contiguous()
    path = os.path.join(HERE, "mobilenet_v2_w025_train.safetensors")
    save_file(out, path)
    print(f"wrote {path}")
    print("mobilenet_v2 train-mode losses:", " ".join(f"{v:.6f}" for v in losses))


if __name__ == "__main__":
    main()
    mobilenet_v2_bn()
