#!/usr/bin/env bash
# make bench-binary-size: what the sidecar's stripped size is made of. Builds, with the sidecar's
# own `edge` profile (fat LTO, one codegen unit, opt-level 3, stripped) and the workspace's locked
# versions, the sidecar and two ten-line programs that only load a model with tract and run it once:
# one with tract-onnx (what the sidecar links), one with tract-nnef alone (tract's own format, no
# ONNX parser). Writes bench-results/binary-size.json and prints it as the last line.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source hack/lib.sh
work=$root/target/binary-size
mkdir -p "$work/onnx/src" "$work/nnef/src" bench-results
cat >"$work/Cargo.toml" <<'TOML'
[workspace]
resolver = "3"
members = ["onnx", "nnef"]
[profile.edge]
inherits = "release"
lto = "fat"
codegen-units = 1
strip = true
TOML
program() { # crate
  cat <<RS
use $1::prelude::*;
fn main() -> TractResult<()> {
    let path = std::env::args().nth(1).expect("model path");
    let shape: Vec<usize> = std::env::args().skip(2).map(|s| s.parse().expect("dim")).collect();
    let model = $1::${2}().model_for_path(path)?.into_optimized()?.into_runnable()?;
    let out = model.run(tvec!(Tensor::zero::<f32>(&shape)?.into()))?;
    println!("{:?}", out[0].shape());
    Ok(())
}
RS
}
for kind in onnx nnef; do
  printf '[package]\nname = "tract-%s-only"\nversion = "0.1.0"\nedition = "2024"\n[dependencies]\ntract-%s = "0.23"\n' \
    "$kind" "$kind" >"$work/$kind/Cargo.toml"
  program "tract_$kind" "$kind" >"$work/$kind/src/main.rs"
done
cp Cargo.lock "$work/Cargo.lock"
log "building the sidecar and the two tract-only programs (profile edge; fat LTO takes minutes)"
cargo build --profile edge -q -p edgefleet-sidecar
(cd "$work" && cargo build --profile edge -q)
# The tract-onnx program really runs the committed CNN (so it is not an empty shell).
"$work/target/edge/tract-onnx-only" optimizer/fixtures/fashion-cnn/model.onnx 1 1 28 28 >/dev/null
size() { stat -c %s "$1"; }
sidecar=$(size target/edge/edgefleet-sidecar)
onnx=$(size "$work/target/edge/tract-onnx-only")
nnef=$(size "$work/target/edge/tract-nnef-only")
json=$(printf '{"bench":"binary-size","profile":"edge","machine":"%s","bytes":{"edgefleet-sidecar":%s,"tract-onnx-only":%s,"tract-nnef-only":%s},"target_bytes":15000000}' \
  "$(uname -m), $(nproc) cores" "$sidecar" "$onnx" "$nnef")
echo "$json" >bench-results/binary-size.json
echo "$json"
