#!/usr/bin/env bash
# `make images`: the operator, optimizer and sidecar container images, assembled without a
# Docker engine and pushed to a registry (default: the local test ground's), then referenced by
# digest. Each image is one layer on an empty base: the binary in /usr/local/bin, exactly the
# shared libraries `ldd` says it loads (glibc, libgcc; for the optimizer also ONNX Runtime from
# the onnxruntime wheel and its C++ runtime), CA certificates, and a passwd entry for the
# non-root user 65532 it runs as. `crane` (go-containerregistry, built from its Go module)
# pushes the layer and sets entrypoint, user, environment and platform.
#
#   hack/images.sh [debug|release] [REGISTRY]
#
# Nothing is rebuilt or pushed when the binaries, the ONNX Runtime library and this script are
# those of the last run and the registry still holds its images (the tests call this often).
#
# Writes target/images/<profile>.json (references, digests, sizes) and
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
declare -A built
if [[ $profile == release ]]; then
  log "building edgefleet-operator, edgefleet-optimizer (release) and edgefleet-sidecar (edge)"
  cargo build -q --release --bin edgefleet-operator --bin edgefleet-optimizer --bin edgefleet-camera-app
  cargo build -q --profile edge -p edgefleet-sidecar
  built=([operator]=target/release [optimizer]=target/release [sidecar]=target/edge [camera-app]=target/release)
else
  log "building edgefleet-operator, edgefleet-optimizer, edgefleet-sidecar, edgefleet-camera-app ($profile)"
  cargo build -q --bin edgefleet-operator --bin edgefleet-optimizer --bin edgefleet-sidecar --bin edgefleet-camera-app
  built=([operator]=target/$profile [optimizer]=target/$profile [sidecar]=target/$profile [camera-app]=target/$profile)
fi
ort=$(bash "$here/ort-lib.sh")
names=(operator optimizer sidecar camera-app)

# The same inputs as the last run, and the registry still has its images: nothing to do.
key=$( (sha256sum "$0" "$ort"; for name in "${names[@]}"; do sha256sum "${built[$name]}/edgefleet-$name"; done; echo "$registry") | sha256sum | cut -c1-16)
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

# Copies a file and every shared library it loads into rootfs, at their paths on this host.
with_libraries() {
  local rootfs=$1 file=$2
  ldd "$file" | awk '/=> \// {print $3} /^[[:space:]]*\/.*ld-linux/ {print $1}' | while read -r lib; do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
}

declare -A refs sizes binsizes
for name in "${names[@]}"; do
  bin=${built[$name]}/edgefleet-$name
  rootfs=$work/$name
  mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/home/nonroot" "$rootfs/tmp"
  chmod 1777 "$rootfs/tmp"
  cp "$bin" "$rootfs/usr/local/bin/"
  [[ $profile == release ]] && strip "$rootfs/usr/local/bin/edgefleet-$name" 2>/dev/null || true
  with_libraries "$rootfs" "$bin"
  env_flags=(--env PATH=/usr/local/bin --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt)
  if [[ $name == optimizer || $name == sidecar ]]; then
    mkdir -p "$rootfs/usr/local/lib"
    cp -L "$ort" "$rootfs/usr/local/lib/libonnxruntime.so"
    with_libraries "$rootfs" "$ort"
    env_flags+=(--env ORT_DYLIB_PATH=/usr/local/lib/libonnxruntime.so)
  fi
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
  chown -R 65532:65532 "$rootfs/home/nonroot" 2>/dev/null || true
  # Reproducible: same files, same layer digest.
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$rootfs" -cf "$work/$name.tar" .
  repo=$registry/edgefleet/$name
  log "pushing $repo:$version"
  "$crane" append "${flags[@]}" --oci-empty-base -f "$work/$name.tar" -t "$repo:$version-layer" >/dev/null
  ref=$("$crane" mutate "${flags[@]}" "$repo:$version-layer" -t "$repo:$version" \
    --entrypoint "/usr/local/bin/edgefleet-$name" --user 65532:65532 --workdir /home/nonroot \
    --set-platform linux/amd64 "${env_flags[@]}" \
    -l org.opencontainers.image.title="edgefleet-$name" -l org.opencontainers.image.version="$version")
  digest=$("$crane" digest "${flags[@]}" "$repo:$version")
  refs[$name]=$repo@$digest
  sizes[$name]=$("$crane" manifest "${flags[@]}" "$repo@$digest" | python3 -c 'import json,sys; m=json.load(sys.stdin); print(sum(l["size"] for l in m["layers"]) + m["config"]["size"])')
  binsizes[$name]=$(stat -c %s "$rootfs/usr/local/bin/edgefleet-$name")
  log "  $ref ($(( ${sizes[$name]} / 1024 / 1024 )) MiB compressed)"
done

{
  echo "image:"
  echo "  registry: $registry/edgefleet"
  for name in operator optimizer sidecar; do # camera-app is not the chart's
    printf '  %s:\n    repository: %s\n    digest: "%s"\n' "$name" "$name" "${refs[$name]#*@}"
  done
} >"target/images/$profile-values.yaml"
cp "target/images/$profile-values.yaml" target/images/values.yaml
echo "${refs[camera-app]}" >target/images/camera-app.ref
image_args=()
for name in "${names[@]}"; do
  image_args+=("$name" "${refs[$name]}" "${sizes[$name]}" "${binsizes[$name]}")
done
json=$(python3 - "$profile" "$registry" "$version" "${image_args[@]}" <<'PY'
import json, sys
a = sys.argv[1:]
out = {"profile": a[0], "registry": a[1], "version": a[2], "images": {}}
rest = a[3:]
for i in range(0, len(rest), 4):
    name, ref, size, binsize = rest[i], rest[i + 1], int(rest[i + 2]), int(rest[i + 3])
    out["images"][name] = {"reference": ref, "compressed_bytes": size,
                           "compressed_mib": round(size / 2**20, 1), "binary_bytes": binsize}
print(json.dumps(out))
PY
)
echo "$json" >"target/images/$profile.json"
echo "$key" >"target/images/$profile.key"
log "wrote target/images/$profile.json and target/images/$profile-values.yaml"
echo "$json"
