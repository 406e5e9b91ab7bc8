"""ResNet-18 forward (batch 1, 224x224, torchvision, random init, eval) on PyTorch and ONNX Runtime:
the peer rows `../shared/peers` does not measure, with its timing method and JSONL format
(`common.bench` / `common.emit`), so `spore bench models --peers` joins them.

Usage (the peers' venv, one process per thread count):
  /tmp/peers/venv/bin/python tools/peers/resnet18.py --threads 1 --out /tmp/peers/resnet18.jsonl
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "shared", "peers", "py"))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

from common import bench, emit  # noqa: E402
from bench_torch import count_flops  # noqa: E402

WORKLOAD = "resnet18 fwd b1"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--out", default=None)
    ap.add_argument("--onnx", default="/tmp/peers/onnx/resnet18_b1.onnx")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    m = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        fl = count_flops(lambda: m(x))
        med, mn, r = bench(lambda: m(x), min_runs=10, min_time=2.0)
    emit(a.out, f"torch {torch.__version__}", a.threads, WORKLOAD, med, mn, r, fl, "eval, inference_mode")

    if not os.path.exists(a.onnx):
        os.makedirs(os.path.dirname(a.onnx), exist_ok=True)
        torch.onnx.export(m, (x,), a.onnx, dynamo=False, opset_version=17, do_constant_folding=True)
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(a.onnx, so, providers=["CPUExecutionProvider"])
    feeds = {sess.get_inputs()[0].name: np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    med, mn, r = bench(lambda: sess.run(None, feeds), min_time=1.5)
    emit(a.out, f"onnxruntime {ort.__version__}", a.threads, WORKLOAD, med, mn, r, fl)


if __name__ == "__main__":
    main()
