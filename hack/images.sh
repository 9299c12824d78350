#!/usr/bin/env bash
# `make images`: the operator, optimizer and sidecar container images, assembled without a
# Docker engine and pushed to a registry (default: the local test ground's), then referenced by
# digest. Each image is an OCI image index with one image per architecture (linux/amd64 and
# linux/arm64): a node pulls its own. Each of those is one layer on an empty base: the binary in
# /usr/local/bin, exactly the shared libraries its loader says it loads (glibc, libgcc; for the
# optimizer and the sidecar also ONNX Runtime from that architecture's onnxruntime wheel and its
# C++ runtime), CA certificates, and a passwd entry for the non-root user 65532 it runs as. The
# arm64 binaries are cross-built (hack/cross.sh) and their libraries are Debian's arm64 ones,
# listed by the arm64 loader under qemu. `crane` (go-containerregistry, built from its Go
# module) pushes the layers, sets entrypoint, user, environment and platform, and writes the
# index.
#
#   hack/images.sh [debug|release] [REGISTRY]
#   IMAGE_ARCHES="amd64" hack/images.sh ...    one architecture only (default: amd64 arm64)
#
# Nothing is rebuilt or pushed when the binaries, the ONNX Runtime library and this script are
# those of the last run and the registry still holds its images (the tests call this often).
#
# Writes target/images/<profile>.json (index references, each architecture's reference and sizes) and
# target/images/<profile>-values.yaml (the chart's image values, also copied to
# target/images/values.yaml: the latest build) and target/images/camera-app.ref (the example
# application's reference); prints the JSON last.
# The Dockerfile builds the same images where Docker is available.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
cd "$here/.."

profile=${1:-release}
registry=${2:-${EDGEFLEET_REGISTRY:-}}
[[ -n $registry ]] || die "no registry: give one, or start the test ground with eval \"\$(make -s up)\""
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
crane=$(bash "$here/build-tool.sh" crane)
flags=(--insecure)
# Release images ship the sidecar as benchmarked: profile `edge` (fat LTO, one codegen unit).
read -r -a arches <<<"${IMAGE_ARCHES:-amd64 arm64}"
for arch in "${arches[@]}"; do
  [[ $arch == amd64 || $arch == arm64 ]] || die "IMAGE_ARCHES: unknown architecture $arch (amd64 or arm64)"
done
names=(operator optimizer sidecar camera-app)
packages=(edgefleet-operator edgefleet-optimizer edgefleet-camera-app)
# built[name/arch]: the directory holding that architecture's edgefleet-<name>.
declare -A built ort
cargo_env_reset
if [[ $profile == release ]]; then
  log "building edgefleet-operator, edgefleet-optimizer (release) and edgefleet-sidecar (edge)"
  cargo build -q --release --bin edgefleet-operator --bin edgefleet-optimizer --bin edgefleet-camera-app
  cargo build -q --profile edge -p edgefleet-sidecar
  for name in "${names[@]}"; do built[$name/amd64]=target/release; done
  built[sidecar/amd64]=target/edge
else
  log "building edgefleet-operator, edgefleet-optimizer, edgefleet-sidecar, edgefleet-camera-app ($profile)"
  bash "$here/debug-build.sh" # with the tests' features: the binaries the tests ran
  for name in "${names[@]}"; do built[$name/amd64]=target/$profile; done
fi
ort[amd64]=$(bash "$here/ort-lib.sh" amd64)
if [[ " ${arches[*]} " == *" arm64 "* ]]; then
  # The same profiles, cross-built. The dev build is cross.sh's default cargo run, which the
  # arm64 tests (sidecar/tests/arm64.rs) and `make test`'s early start share.
  if [[ $profile == release ]]; then
    dir=$(bash "$here/cross.sh" release "${packages[@]}")
    for name in "${names[@]}"; do built[$name/arm64]=$dir; done
    built[sidecar/arm64]=$(bash "$here/cross.sh" edge edgefleet-sidecar)
  else
    dir=$(bash "$here/cross.sh" dev)
    for name in "${names[@]}"; do built[$name/arm64]=$dir; done
  fi
  ort[arm64]=$(bash "$here/ort-lib.sh" arm64)
fi

# The same inputs as the last run, and the registry still has its images: nothing to do.
key=$( (sha256sum "$0"; echo "$registry ${arches[*]}"; for arch in "${arches[@]}"; do
  sha256sum "${ort[$arch]}"
  for name in "${names[@]}"; do sha256sum "${built[$name/$arch]}/edgefleet-$name"; done
done) | sha256sum | cut -c1-16)
if [[ -f target/images/$profile.json && $(cat "target/images/$profile.key" 2>/dev/null) == "$key" ]]; then
  fresh=1
  for ref in $(python3 -c 'import json,sys; print(" ".join(i["reference"] for i in json.load(open(sys.argv[1]))["images"].values()))' "target/images/$profile.json"); do
    "$crane" manifest "${flags[@]}" "$ref" >/dev/null 2>&1 || fresh=0
  done
  if ((fresh)); then
    log "images unchanged since the last run (target/images/$profile.json)"
    cp "target/images/$profile-values.yaml" target/images/values.yaml
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["images"]["camera-app"]["reference"])' "target/images/$profile.json" >target/images/camera-app.ref
    cat "target/images/$profile.json"
    exit 0
  fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/edgefleet-images.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p target/images

# Copies a file and every shared library it loads into rootfs, at their paths on this host. An
# arm64 file's libraries (Debian's multiarch arm64 packages) are listed by the arm64 loader under
# qemu.
with_libraries() {
  local rootfs=$1 arch=$2 file=$3
  local list=(ldd)
  [[ $arch == arm64 ]] && list=(qemu-aarch64-static /lib/ld-linux-aarch64.so.1 --list)
  "${list[@]}" "$file" | awk '/=> \// {print $3} /^[[:space:]]*\/.*ld-linux/ {print $1}' | while read -r lib; do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
}

# One architecture's image of NAME, pushed as REPO:VERSION-ARCH; sets refs[NAME/ARCH] and adds
# a line "NAME ARCH REFERENCE COMPRESSED BINARY" to $work/platforms.
declare -A refs
assemble() {
  local name=$1 arch=$2
  local bin=${built[$name/$arch]}/edgefleet-$name rootfs=$work/$name-$arch repo=$registry/edgefleet/$name
  local strip=strip digest size
  [[ $arch == arm64 ]] && strip=aarch64-linux-gnu-strip
  mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/home/nonroot" "$rootfs/tmp"
  chmod 1777 "$rootfs/tmp"
  cp "$bin" "$rootfs/usr/local/bin/"
  if [[ $profile == release ]]; then "$strip" "$rootfs/usr/local/bin/edgefleet-$name"; fi
  with_libraries "$rootfs" "$arch" "$bin"
  local env_flags=(--env PATH=/usr/local/bin --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt)
  if [[ $name == optimizer || $name == sidecar ]]; then
    mkdir -p "$rootfs/usr/local/lib"
    cp -L "${ort[$arch]}" "$rootfs/usr/local/lib/libonnxruntime.so"
    with_libraries "$rootfs" "$arch" "${ort[$arch]}"
    env_flags+=(--env ORT_DYLIB_PATH=/usr/local/lib/libonnxruntime.so)
  fi
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
  chown -R 65532:65532 "$rootfs/home/nonroot" 2>/dev/null || true
  # Reproducible: same files, same layer digest.
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$rootfs" -cf "$work/$name-$arch.tar" .
  log "pushing $repo:$version-$arch"
  "$crane" append "${flags[@]}" --oci-empty-base -f "$work/$name-$arch.tar" -t "$repo:$version-$arch-layer" >/dev/null
  "$crane" mutate "${flags[@]}" "$repo:$version-$arch-layer" -t "$repo:$version-$arch" \
    --entrypoint "/usr/local/bin/edgefleet-$name" --user 65532:65532 --workdir /home/nonroot \
    --set-platform "linux/$arch" "${env_flags[@]}" \
    -l org.opencontainers.image.title="edgefleet-$name" -l org.opencontainers.image.version="$version" >/dev/null
  digest=$("$crane" digest "${flags[@]}" "$repo:$version-$arch")
  refs[$name/$arch]=$repo@$digest
  size=$("$crane" manifest "${flags[@]}" "$repo@$digest" | python3 -c 'import json,sys; m=json.load(sys.stdin); print(sum(l["size"] for l in m["layers"]) + m["config"]["size"])')
  echo "$name $arch ${refs[$name/$arch]} $size $(stat -c %s "$rootfs/usr/local/bin/edgefleet-$name")" >>"$work/platforms"
  log "  ${refs[$name/$arch]} ($((size / 1024 / 1024)) MiB compressed)"
}

for name in "${names[@]}"; do
  repo=$registry/edgefleet/$name
  manifests=()
  for arch in "${arches[@]}"; do
    assemble "$name" "$arch"
    manifests+=(-m "${refs[$name/$arch]}")
  done
  # The index; each entry's platform is read from its image's config.
  "$crane" index append "${flags[@]}" "${manifests[@]}" -t "$repo:$version" >/dev/null
  refs[$name]=$repo@$("$crane" digest "${flags[@]}" "$repo:$version")
  log "$name: index ${refs[$name]} (${arches[*]})"
done

{
  echo "image:"
  echo "  registry: $registry/edgefleet"
  for name in operator optimizer sidecar; do # camera-app is not the chart's
    printf '  %s:\n    repository: %s\n    digest: "%s"\n' "$name" "$name" "${refs[$name]#*@}"
    if [[ $name != operator ]]; then # the sidecar and the optimizer run on a class's nodes
      echo "    platforms:"
      for arch in "${arches[@]}"; do printf '      %s: "%s"\n' "$arch" "${refs[$name/$arch]#*@}"; done
    fi
  done
} >"target/images/$profile-values.yaml"
cp "target/images/$profile-values.yaml" target/images/values.yaml
echo "${refs[camera-app]}" >target/images/camera-app.ref
indexes=()
for name in "${names[@]}"; do indexes+=("$name=${refs[$name]}"); done
json=$(python3 - "$profile" "$registry" "$version" "$work/platforms" "${indexes[@]}" <<'PY'
import json, sys
profile, registry, version, platforms, *indexes = sys.argv[1:]
out = {"profile": profile, "registry": registry, "version": version, "images": {}}
for entry in indexes:
    name, ref = entry.split("=", 1)
    out["images"][name] = {"reference": ref, "platforms": {}}
for line in open(platforms):
    name, arch, ref, size, binsize = line.split()
    out["images"][name]["platforms"][arch] = {"reference": ref, "compressed_bytes": int(size),
        "compressed_mib": round(int(size) / 2**20, 1), "binary_bytes": int(binsize)}
print(json.dumps(out))
PY
)
echo "$json" >"target/images/$profile.json"
echo "$key" >"target/images/$profile.key"
log "wrote target/images/$profile.json and target/images/$profile-values.yaml"
echo "$json"
