#!/usr/bin/env bash
# Prints the path of libonnxruntime.so for ORT_DYLIB_PATH. `ort` is built with load-dynamic and
# never downloads it: the library comes from the onnxruntime PyPI wheel pinned in
# hack/requirements.txt.
#
#   hack/ort-lib.sh          this machine's (amd64), from the project's Python environment
#   hack/ort-lib.sh arm64    aarch64's, from the same version's manylinux aarch64 wheel, pinned by
#                            hash below and unpacked into the cache
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
arch=${1:-amd64}
# The aarch64 wheel of the version in requirements.txt; a version bump must update this hash.
ARM64_WHEEL_SHA256=bbfd2fca76c855317568c1b36a885ddea2272c13cb0e395002c402f2360429a6

case $arch in
  amd64)
    py=$("$here/python-env.sh")
    lib=$("$py" -c 'import glob, os, onnxruntime; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*")))[0])')
    ;;
  arm64)
    version=$(sed -n 's/^onnxruntime==//p' "$here/requirements.txt")
    [[ -n $version ]] || die "hack/requirements.txt pins no onnxruntime version"
    dir=$EDGEFLEET_CACHE/onnxruntime-$version-aarch64
    lib=$dir/libonnxruntime.so.$version
    if [[ ! -f $lib ]]; then
      log "downloading the onnxruntime $version wheel for manylinux aarch64"
      work=$(mktemp -d)
      trap 'rm -rf "$work"' EXIT
      echo "onnxruntime==$version --hash=sha256:$ARM64_WHEEL_SHA256" >"$work/req.txt"
      python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --platform manylinux_2_28_aarch64 --python-version 3.11 --implementation cp --abi cp311 \
        --require-hashes -r "$work/req.txt" -d "$work" >&2
      mkdir -p "$dir"
      python3 - "$work"/onnxruntime-*.whl "$lib" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("onnxruntime/capi/libonnxruntime.so")]
    if len(names) != 1:
        sys.exit(f"{wheel}: expected one libonnxruntime.so, found {names}")
    with z.open(names[0]) as src, open(out + ".part", "wb") as dst:
        dst.write(src.read())
PY
      mv "$lib.part" "$lib"
    fi
    ;;
  *) die "hack/ort-lib.sh: unknown architecture $arch (amd64 or arm64)" ;;
esac
[[ -f $lib ]] || die "libonnxruntime.so ($arch) not found"
echo "$lib"
