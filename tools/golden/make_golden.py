#!/usr/bin/env python3
"""Makes the cross-framework golden cases: PyTorch computes LeNet-5 and a narrow MobileNetV2
at 32x32 with random weights (BatchNorm running statistics randomised too, so BN is not an
identity), on a random input, in eval mode, in float64 for a clean reference, stored as f32.

Output: tools/golden/<model>.safetensors holding every parameter under its PyTorch
state_dict key (PyTorch layouts: OIHW, Linear [out, in]), plus `__input__` (NCHW) and
`__output__` (logits). Spore's tests convert layouts (OIHW -> OHWI, NCHW -> NHWC) and must
match `__output__` to 1e-4 relative. Needs: pip install torch==2.15.0 torchvision==0.29.2
safetensors. Run: python3 tools/golden/make_golden.py
"""
import os

import torch
import torch.nn as nn
import torchvision
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))


class LeNet5(nn.Module):
    """LeNet-5 as Spore's zoo defines it (conv pad 2 so 28x28 and 32x32 inputs both work)."""

    def __init__(self, classes=10, in_channels=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 6 * 6, 120)  # 32x32 input: 32 -> 16 -> 12 -> 6
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, classes)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


def randomise_bn(model, gen):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen, dtype=torch.float64) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen, dtype=torch.float64) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen, dtype=torch.float64) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen, dtype=torch.float64) * 0.1)


def dump(name, model, input_shape, seed):
    gen = torch.Generator().manual_seed(seed)
    model = model.double().eval()
    randomise_bn(model, gen)
    # Round weights to f32 first so PyTorch computes on exactly what Spore will load.
    with torch.no_grad():
        for p in model.state_dict().values():
            if p.is_floating_point():
                p.copy_(p.float().double())
    x = torch.rand(input_shape, generator=gen, dtype=torch.float64).float().double()
    with torch.no_grad():
        y = model(x)
    tensors = {k: v.float().contiguous() for k, v in model.state_dict().items() if v.is_floating_point()}
    tensors["__input__"] = x.float().contiguous()
    tensors["__output__"] = y.float().contiguous()
    path = os.path.join(HERE, f"{name}.safetensors")
    save_file(tensors, path, metadata={"producer": f"torch {torch.__version__}, torchvision {torchvision.__version__}", "seed": str(seed)})
    n = sum(v.numel() for k, v in tensors.items() if not k.startswith("__"))
    print(f"{path}: {n} parameters, output {tuple(y.shape)}")


if __name__ == "__main__":
    torch.manual_seed(0)
    dump("lenet5", LeNet5(classes=10, in_channels=1), (2, 1, 32, 32), seed=1)
    torch.manual_seed(0)
    mnv2 = torchvision.models.mobilenet_v2(width_mult=0.25, num_classes=10)
    dump("mobilenet_v2_w025_32", mnv2, (2, 3, 32, 32), seed=2)
