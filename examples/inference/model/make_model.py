#!/usr/bin/env python3
"""Writes the example's ONNX models, byte for byte the same on every run.

classifier.onnx (committed next to this script): a 4 -> 16 -> 3 MLP with softmax,
    input `features` float32 [N, 4], output `probabilities` float32 [N, 3].
    Its weights are small exact fractions computed from their indices (no random
    generator), so they are known and identical everywhere:
        W1[i][j] = ((7*i + 3*j) % 11 - 5) / 8      b1[j] = ((j % 5) - 2) / 16
        W2[j][k] = ((5*j + 2*k) % 9 - 4) / 8       b2[k] = (k - 1) / 4
slow.onnx (only with --slow, for deadline tests; not committed): same input and output
    names, but spends seconds in a chain of 1024x1024 matrix products.
wide.onnx (only with --bench, for benchmarks; not committed): the same architecture at
    embedding size, 256 -> 1024 -> 256 with softmax (about 2 MB of weights, also exact
    fractions of their indices).
deep.onnx (only with --bench; not committed): a compute-bound classifier,
    256 -> 2048 -> 2048 -> 2048 -> 16 with ReLUs and softmax (about 36 MB of weights,
    exact fractions of their indices), where the model's work dominates each call.

Usage: make_model.py [OUT_DIR] [--slow] [--bench]   (OUT_DIR defaults to this directory)
Needs the `onnx` and `numpy` Python packages (tests/requirements.txt pins them).
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def weights():
    w1 = np.array([[((7 * i + 3 * j) % 11 - 5) / 8 for j in range(16)] for i in range(4)], dtype=np.float32)
    b1 = np.array([((j % 5) - 2) / 16 for j in range(16)], dtype=np.float32)
    w2 = np.array([[((5 * j + 2 * k) % 9 - 4) / 8 for k in range(3)] for j in range(16)], dtype=np.float32)
    b2 = np.array([(k - 1) / 4 for k in range(3)], dtype=np.float32)
    return w1, b1, w2, b2


def wide_weights(n_in=256, hidden=1024, n_out=256):
    i = np.arange(n_in)[:, None]
    j = np.arange(hidden)[None, :]
    w1 = (((13 * i + 7 * j) % 23) - 11).astype(np.float32) / 256
    b1 = ((np.arange(hidden) % 5) - 2).astype(np.float32) / 16
    j = np.arange(hidden)[:, None]
    k = np.arange(n_out)[None, :]
    w2 = (((5 * j + 3 * k) % 19) - 9).astype(np.float32) / 256
    b2 = ((np.arange(n_out) % 7) - 3).astype(np.float32) / 8
    return w1, b1, w2, b2


def layer(n_in, n_out, salt):
    i = np.arange(n_in)[:, None]
    j = np.arange(n_out)[None, :]
    w = (((13 * i + 7 * j + salt) % 23) - 11).astype(np.float32) / (16 * np.sqrt(n_in)).astype(np.float32)
    b = ((np.arange(n_out) % 5) - 2).astype(np.float32) / 16
    return w, b


def mlp(sizes, name):
    """`features` [N, sizes[0]] -> ReLU layers -> softmax `probabilities` [N, sizes[-1]]."""
    nodes, inits, x = [], [], "features"
    last = len(sizes) - 2
    for n, (a, b) in enumerate(zip(sizes, sizes[1:])):
        w, bias = layer(a, b, n)
        inits += [numpy_helper.from_array(w, f"W{n}"), numpy_helper.from_array(bias, f"B{n}")]
        nodes.append(helper.make_node("MatMul", [x, f"W{n}"], [f"m{n}"]))
        nodes.append(helper.make_node("Add", [f"m{n}", f"B{n}"], [f"a{n}"]))
        if n == last:
            nodes.append(helper.make_node("Softmax", [f"a{n}"], ["probabilities"], axis=1))
        else:
            nodes.append(helper.make_node("Relu", [f"a{n}"], [f"r{n}"]))
            x = f"r{n}"
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", sizes[0]])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", sizes[-1]])],
        inits,
    )
    return helper.make_model(
        graph, producer_name="flash-example-inference", opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8
    )


def save(model, path):
    onnx.checker.check_model(model)
    with open(path, "wb") as f:
        f.write(model.SerializeToString(deterministic=True))


def classifier(params=None, name="flash_example_classifier"):
    w1, b1, w2, b2 = params if params is not None else weights()
    nodes = [
        helper.make_node("MatMul", ["features", "W1"], ["h0"]),
        helper.make_node("Add", ["h0", "B1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "W2"], ["l0"]),
        helper.make_node("Add", ["l0", "B2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", w1.shape[0]])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", w2.shape[1]])],
        [
            numpy_helper.from_array(w1, "W1"),
            numpy_helper.from_array(b1, "B1"),
            numpy_helper.from_array(w2, "W2"),
            numpy_helper.from_array(b2, "B2"),
        ],
    )
    return helper.make_model(
        graph, producer_name="flash-example-inference", opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8
    )


def slow(products=120, size=1024):
    """`features` [N,4] -> a [size,size] matrix of zeros -> `products` matmuls -> [N,3]."""
    nodes = [
        helper.make_node("ReduceSum", ["features"], ["s"], keepdims=1),  # [1,1]
        helper.make_node("Mul", ["s", "zero"], ["z"]),
        helper.make_node("Expand", ["z", "square"], ["m0"]),
    ]
    for i in range(products):
        nodes.append(helper.make_node("MatMul", [f"m{i}", f"m{i}"], [f"m{i + 1}"]))
    nodes += [
        helper.make_node("Slice", [f"m{products}", "starts", "ends"], ["corner"]),  # [1,3]
        helper.make_node("Shape", ["features"], ["fshape"]),
        helper.make_node("Gather", ["fshape", "zero_i"], ["n"], axis=0),
        helper.make_node("Concat", ["n", "three"], ["oshape"], axis=0),
        helper.make_node("Expand", ["corner", "oshape"], ["probabilities"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(0, dtype=np.float32), "zero"),
        numpy_helper.from_array(np.array([size, size], dtype=np.int64), "square"),
        numpy_helper.from_array(np.array([0, 0], dtype=np.int64), "starts"),
        numpy_helper.from_array(np.array([1, 3], dtype=np.int64), "ends"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "zero_i"),
        numpy_helper.from_array(np.array([3], dtype=np.int64), "three"),
    ]
    graph = helper.make_graph(
        nodes,
        "flash_example_slow",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    return helper.make_model(
        graph, producer_name="flash-example-inference", opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8
    )


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    out = args[0] if args else os.path.dirname(os.path.abspath(__file__))
    os.makedirs(out, exist_ok=True)
    save(classifier(), os.path.join(out, "classifier.onnx"))
    if "--slow" in argv:
        save(slow(), os.path.join(out, "slow.onnx"))
    if "--bench" in argv:
        save(classifier(wide_weights(), "flash_example_wide"), os.path.join(out, "wide.onnx"))
        save(mlp([256, 2048, 2048, 2048, 16], "flash_example_deep"), os.path.join(out, "deep.onnx"))


if __name__ == "__main__":
    main(sys.argv[1:])
