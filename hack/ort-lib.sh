#!/usr/bin/env bash
# Prints the path of libonnxruntime.so from the project's Python environment (the onnxruntime
# PyPI wheel), for ORT_DYLIB_PATH. `ort` is built with load-dynamic and never downloads it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
py=$("$here/python-env.sh")
lib=$("$py" -c 'import glob, os, onnxruntime; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*")))[0])')
[[ -f $lib ]] || { echo "libonnxruntime.so not found in the onnxruntime wheel" >&2; exit 1; }
echo "$lib"
