"""Optimizer benchmark driver (see hack/bench-optimizer.sh).

For each technique: `edgefleet-optimizer optimize --techniques T --objective smallest` for the
device class that offers it, then the written model re-measured with `evaluate` on both runtimes
(1 thread, the same 9,800 evaluation samples, calibration samples excluded). The peer is ONNX
Runtime's quantize_static (QDQ, per-channel, 200 calibration images: the very samples the
optimizer calibrates on) and quantize_dynamic, measured the same way.
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
    try:
        p = run([opt, "evaluate", "--model", model, "--dataset", dataset, "--runtime", runtime,
                 "--threads", "1", "--latency-runs", "500", "--json",
                 "--exclude-calibration", str(CALIBRATION)])
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
    dynamic = os.path.join(work, "ort-dynamic.onnx")
    t = time.time()
    quantize_dynamic(base, dynamic, weight_type=QuantType.QInt8)
    out["ort-quantize_dynamic"] = entry(opt, dynamic, dataset, {"wall_seconds": round(time.time() - t, 2)})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--optimizer", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-drop", default="0.01")
    a = ap.parse_args()
    opt = os.path.abspath(a.optimizer)
    work = tempfile.mkdtemp(prefix="bench-optimizer-")
    results = {"fp32": entry(opt, a.model, a.dataset)}
    plan = [("int8-dynamic", "cpu-int8"), ("int8-static", "cpu-int8"), ("pruning", "cpu-int8"),
            ("clustering", "cpu-int8"), ("float16", "nvidia-fp16"), ("full-integer", "integer-npu")]
    for technique, device_class in plan:
        out = os.path.join(work, technique)
        t = time.time()
        p = run([opt, "optimize", "--model", a.model, "--dataset", a.dataset, "--device-class",
                 device_class, "--max-drop", a.max_drop, "--objective", "smallest", "--techniques",
                 technique, "--calibration-samples", str(CALIBRATION), "--latency-runs", "50",
                 "--out", out], ok=(0, 3))
        wall = round(time.time() - t, 2)
        report = json.load(open(os.path.join(out, "report.json")))
        w = report["winner"]
        print(f"{technique} ({device_class}): {report['verdict']}, winner "
              f"{w and w['technique']} in {wall}s", file=sys.stderr)
        if w is None or w["technique"] == "fp32":
            results[technique] = {"device_class": device_class, "verdict": report["verdict"],
                                  "note": "no candidate of this technique passed the gate",
                                  "wall_seconds": wall}
            continue
        results[technique] = entry(opt, os.path.join(out, "model.onnx"), a.dataset, {
            "device_class": device_class, "gated_with": report["runtime"],
            "gate_accuracy": w["accuracy"], "required_accuracy": report["required_accuracy"],
            "parameters": w["parameters"], "layers_kept_float": w["layers_kept_float"],
            "wall_seconds": wall})
    results.update(peer(opt, a.model, a.dataset, work))

    base = results["fp32"]
    summary = {}
    for name, r in results.items():
        if "bytes_zstd" not in r:
            continue
        s = {"zstd_vs_fp32": round(r["bytes_zstd"] / base["bytes_zstd"], 4)}
        for rt in ("tract", "onnxruntime"):
            m, b = r[rt], base[rt]
            if "accuracy" in m:
                s[f"{rt}_top1_drop_points"] = round((b["accuracy"] - m["accuracy"]) * 100, 2)
                s[f"{rt}_speedup_vs_fp32"] = round(b["latency_ms_p50"] / m["latency_ms_p50"], 3)
        summary[name] = s
    doc = {"bench": "optimizer", "model": "fashion-cnn", "dataset": "fashion-mnist test, 9800 evaluation samples",
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.platform()}",
           "threads": 1, "results": results, "summary": summary}
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=2)
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
