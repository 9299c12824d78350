#!/usr/bin/env bash
# The workspace's debug binaries in target/debug, built the way `make test` builds them: cargo
# resolves a dependency's features from the packages and targets a command selects, so `cargo
# build -p edgefleet-optimizer`, `cargo build --bin …` and `cargo test --workspace` each build
# tract, kube and the rest once more with features of their own (minutes apiece on 2 cores).
# Everything that wants a debug binary (the tests' support, hack/images.sh debug, make tools,
# the demo) builds with this one command, whose units `cargo test --workspace` shares; the
# example camera app, which has no tests of its own and so no binary from it, is built on its
# own (serde_json and itself only).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
cd "$here/.."
cargo_env_reset
cargo test --workspace --no-run --locked 2>&1 | sed "/^ *Executable /d" >&2
cargo build --locked -q --bin edgefleet-camera-app >&2
