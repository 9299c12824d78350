"""Bytes an ideal order-0 entropy coder would need for an ONNX model's initializers.

    python hack/entropy.py MODEL.onnx [MODEL.onnx ...]

Per model: the file size, and the sum over initializers of (values x Shannon entropy of their
value histogram) / 8 -- a lower bound for any coder that codes each value on its own, such as the
entropy stage of zstd. Initializers of 200 values or more are listed with their dtype, size,
share of zeros and entropy in bits per value. Used in BENCHMARKS.md to show how far the size
target is from what the chosen weights can possibly compress to.
"""
import sys

import numpy as np
import onnx
from onnx import numpy_helper


def entropy_bits(values):
    _, counts = np.unique(values, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def main(paths):
    for path in paths:
        model = onnx.load(path)
        total = 0.0
        print(path)
        for t in model.graph.initializer:
            a = numpy_helper.to_array(t).ravel()
            if a.size == 0:
                continue
            h = entropy_bits(a)
            total += h * a.size / 8
            if a.size >= 200:
                print(f"  {t.name}: {a.dtype} x{a.size}, zeros {np.mean(a == 0):.2f}, {h:.2f} bits/value")
        with open(path, "rb") as f:
            size = len(f.read())
        print(f"  file {size} bytes; initializers' entropy {int(total)} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
