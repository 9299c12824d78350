"""Optimizer benchmark driver (see hack/bench-optimizer.sh).

For each model and device class: one `edgefleet-optimizer optimize --objective smallest
--keep-candidates` run, then every passing candidate re-measured with `evaluate` on both runtimes
(1 thread, the evaluation samples only: the calibration samples are excluded). The peer is ONNX
Runtime's quantize_static (QDQ, per-channel, 200 calibration images: the very samples the
optimizer calibrates on; int8 activations, and uint8 activations as ONNX Runtime recommends for
x86 without VNNI) and quantize_dynamic, measured the same way.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

CALIBRATION = 200


def run(cmd, ok=(0,)):
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "RUST_BACKTRACE": "0"})
    if p.returncode not in ok:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def measure(opt, model, dataset, runtime):
    limit = ["--limit", str(TRACT_LIMIT)] if runtime == "tract" and TRACT_LIMIT else []
    try:
        p = run([opt, "evaluate", "--model", model, "--dataset", dataset, "--runtime", runtime,
                 "--threads", "1", "--latency-runs", "300", "--json",
                 "--exclude-calibration", str(CALIBRATION)] + limit)
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        cause = next((lines[i + 1] for i, line in enumerate(lines[:-1]) if line == "Caused by:"), lines[-1])
        return {"error": cause[:400]}
    r = json.loads(p.stdout)
    return {k: r[k] for k in ("accuracy", "latency_ms_p50", "latency_ms_p99", "bytes", "bytes_zstd", "samples")}


def entry(opt, model, dataset, extra=None):
    e = {"tract": measure(opt, model, dataset, "tract"),
         "onnxruntime": measure(opt, model, dataset, "onnxruntime")}
    for rt in ("onnxruntime", "tract"):
        if "bytes" in e[rt]:
            e["bytes"], e["bytes_zstd"] = e[rt]["bytes"], e[rt]["bytes_zstd"]
            break
    if extra:
        e.update(extra)
    return e


def peer(opt, base, dataset, work):
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)
    calib = os.path.join(work, "calibration.npz")
    run([opt, "calibration-set", "--dataset", dataset, "--samples", str(CALIBRATION), "--out", calib])
    x = np.load(calib)["x"]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": x[i:i + 1]} for i in range(len(x))])

        def get_next(self):
            return next(self.it, None)

    out = {}
    static = os.path.join(work, "ort-static.onnx")
    t = time.time()
    quantize_static(base, static, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    out["ort-quantize_static"] = entry(opt, static, dataset, {"wall_seconds": round(time.time() - t, 2)})
    # uint8 activations: the format ONNX Runtime recommends for speed on x86 without VNNI.
    static_u8 = os.path.join(work, "ort-static-u8s8.onnx")
    t = time.time()
    quantize_static(base, static_u8, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    out["ort-quantize_static U8S8"] = entry(opt, static_u8, dataset, {"wall_seconds": round(time.time() - t, 2)})
    dynamic = os.path.join(work, "ort-dynamic.onnx")
    t = time.time()
    quantize_dynamic(base, dynamic, weight_type=QuantType.QInt8)
    out["ort-quantize_dynamic"] = entry(opt, dynamic, dataset, {"wall_seconds": round(time.time() - t, 2)})
    return out


def optimize_class(opt, model, dataset, device_class, max_drop, work, search_samples, budget):
    """One optimize run keeping every passing candidate; returns (report, wall seconds)."""
    out = os.path.join(work, os.path.basename(device_class).replace(".yaml", ""))
    t = time.time()
    run([opt, "optimize", "--model", model, "--dataset", dataset, "--device-class", device_class,
         "--max-drop", max_drop, "--objective", "smallest", "--calibration-samples", str(CALIBRATION),
         "--search-samples", str(search_samples), "--latency-runs", "50", "--keep-candidates",
         "--time-budget", budget,
         "--out", out], ok=(0, 3))
    wall = round(time.time() - t, 2)
    return json.load(open(os.path.join(out, "report.json"))), wall


def bench_model(opt, name, model, dataset, classes, max_drop, work, search_samples, tract_limit):
    """`classes`: (device class, time budget) pairs."""
    global TRACT_LIMIT
    TRACT_LIMIT = tract_limit
    os.makedirs(work, exist_ok=True)
    results = {"fp32": entry(opt, model, dataset)}
    runs = {}
    for device_class, budget in classes:
        report, wall = optimize_class(opt, model, dataset, device_class, max_drop, work, search_samples, budget)
        label = os.path.basename(device_class).replace(".yaml", "")
        runs[label] = {"verdict": report["verdict"], "winner": report["winner"] and report["winner"]["technique"],
                       "wall_seconds": wall, "runtime": report["runtime"]}
        print(f"{name} / {label}: {report['verdict']}, winner "
              f"{report['winner'] and report['winner']['technique']} in {wall}s", file=sys.stderr)
        for c in report["candidates"]:
            if c["technique"] == "fp32":
                continue
            params = c["parameters"]
            key = f"{label}: " + c["technique"] + "".join(f" {k}={v if not isinstance(v, dict) else v.get('sparsity')}"
                                           for k, v in sorted(params.items()) if k != "int8Weights")
            if c.get("file") is None:
                results.setdefault(key, {"device_class": label, "status": c["status"], "reason": c["reason"],
                                         "seconds": round(c["seconds"], 2)})
                continue
            results[key] = entry(opt, c["file"], dataset, {
                "device_class": label, "gated_with": report["runtime"], "gate_accuracy": c["accuracy"],
                "required_accuracy": report["required_accuracy"], "layers_kept_float": c["layers_kept_float"],
                # Speed against fp32 as the gate timed it: interleaved with the base in one process.
                "gate_speed_vs_fp32": c.get("speed_vs_fp32"), "layer_bits": c.get("layer_bits"),
                "seconds": round(c["seconds"], 2)})
    results.update(peer(opt, model, dataset, work))
    base = results["fp32"]
    summary = {}
    for key, r in results.items():
        if "bytes_zstd" not in r:
            continue
        s = {"zstd_vs_fp32": round(r["bytes_zstd"] / base["bytes_zstd"], 4)}
        for rt in ("tract", "onnxruntime"):
            m, b = r[rt], base[rt]
            if "accuracy" in m and "accuracy" in b:
                s[f"{rt}_top1_drop_points"] = round((b["accuracy"] - m["accuracy"]) * 100, 2)
                s[f"{rt}_speedup_vs_fp32"] = round(b["latency_ms_p50"] / m["latency_ms_p50"], 3)
        summary[key] = s
    return {"runs": runs, "results": results, "summary": summary}


TRACT_LIMIT = None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--optimizer", required=True)
    ap.add_argument("--cnn", required=True)
    ap.add_argument("--cnn-dataset", required=True)
    ap.add_argument("--efficientnet")
    ap.add_argument("--efficientnet-dataset")
    ap.add_argument("--cpu-onnxruntime", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-drop", default="0.01")
    a = ap.parse_args()
    opt = os.path.abspath(a.optimizer)
    work = tempfile.mkdtemp(prefix="bench-optimizer-")
    # A run of one model (BENCH_EFFICIENTNET=0) keeps the other model's figures from the last run.
    previous = json.load(open(a.out)) if os.path.exists(a.out) else {}
    doc = {"bench": "optimizer", "threads": 1,
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
           "evaluation": f"test set minus the {CALIBRATION} calibration samples; batch-1 latency at 1 thread",
           "models": dict(previous.get("models", {}))}
    doc["models"]["fashion-cnn"] = bench_model(
        opt, "fashion-cnn", a.cnn, a.cnn_dataset, [("cpu-int8", "30m"), ("nvidia-fp16", "30m"), ("integer-npu", "30m")],
        a.max_drop, os.path.join(work, "cnn"), 1000, None)
    if a.efficientnet:
        doc["models"]["efficientnet-lite0"] = bench_model(
            opt, "efficientnet-lite0", a.efficientnet, a.efficientnet_dataset,
            [(a.cpu_onnxruntime, "12m"), ("nvidia-fp16", "8m"), ("integer-npu", "8m")], a.max_drop,
            os.path.join(work, "efficientnet"), 500, 1000)
        doc["models"]["efficientnet-lite0"]["note"] = (
            "gated with ONNX Runtime (hack/bench/cpu-onnxruntime.yaml); time budgets 12m/8m/8m: every "
            "candidate is measured as built, then the misses are searched while the budget lasts; "
            "tract figures on the first 1000 evaluation samples")
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=2)
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
