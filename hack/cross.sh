#!/usr/bin/env bash
# Cross-builds workspace binaries for aarch64 (arm64 edge devices) and prints the directory they
# are in. rustup cannot add targets on this machine kind, so the aarch64 build uses Debian
# bookworm's rustc-web with its aarch64 standard library, gcc-aarch64-linux-gnu as linker and C
# compiler (ring, zstd-sys, tract-linalg's kernels) and qemu-user-static to run the results (test
# runner below, and the binfmt handler hack/nodes.sh registers for arm64 containers). The x86
# build keeps the normal toolchain: this script only ever sets RUSTC for its own cargo.
#
#   hack/cross.sh PROFILE [BINARY...]    e.g. hack/cross.sh edge edgefleet-sidecar; without
#                                        binaries, those of the images (hack/images.sh): one
#                                        cargo run that the arm64 tests share
#   hack/cross.sh --env                  prints the exports (cargo test --target runs under qemu)
#   hack/cross.sh --binfmt               registers qemu as the kernel's arm64 binfmt handler
#
# Its own target directory (target/cross): the host's build scripts and proc macros there are
# built by rustc-web, and must not invalidate the normal build's.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
cd "$here/.."

TRIPLE=aarch64-unknown-linux-gnu
# Binaries run under qemu with Debian's multiarch arm64 libraries (/lib/aarch64-linux-gnu, the
# loader at /lib/ld-linux-aarch64.so.1), never with `-L /usr/aarch64-linux-gnu`: that cross
# sysroot's glibc is an older build than libc6:arm64, and a loader of one with the libc of the
# other spins forever in the first pthread_create.

install_toolchain() {
  local want=()
  [[ -x /usr/bin/rustc ]] || want+=(rustc-web)
  [[ -d /usr/lib/rustlib/$TRIPLE/lib ]] || want+=(libstd-rust-web-dev:arm64)
  command -v aarch64-linux-gnu-gcc >/dev/null || want+=(gcc-aarch64-linux-gnu)
  [[ -f /usr/aarch64-linux-gnu/lib/libc.so.6 ]] || want+=(libc6-dev-arm64-cross)
  [[ -f /lib/aarch64-linux-gnu/libc.so.6 ]] || want+=(libc6:arm64)
  [[ -f /lib/aarch64-linux-gnu/libstdc++.so.6 ]] || want+=(libstdc++6:arm64)
  command -v qemu-aarch64-static >/dev/null || want+=(qemu-user-static)
  [[ ${#want[@]} -eq 0 ]] && return 0
  log "installing the aarch64 cross toolchain: ${want[*]}"
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo=sudo
  dpkg --print-foreign-architectures | grep -qx arm64 || $sudo dpkg --add-architecture arm64
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${want[@]}" >&2
}

exports() {
  cat <<EOF
export RUSTC=/usr/bin/rustc
export CARGO_TARGET_DIR=$PWD/target/cross
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64-static
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
EOF
}

# The kernel runs arm64 executables through qemu: registered with the F flag (the interpreter is
# opened now), so it also works inside mount namespaces and chroots that lack qemu (arm64
# containers on the test ground's arm64 node, the image test's chroots).
binfmt() {
  [[ -e /proc/sys/fs/binfmt_misc/register ]] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  [[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] && return 0
  sed 's#:[^:]*:[A-Z]*$#:/usr/bin/qemu-aarch64-static:F#' /usr/lib/binfmt.d/qemu-aarch64.conf >/proc/sys/fs/binfmt_misc/register
}

install_toolchain
case ${1:-} in
  --env) exports; exit 0 ;;
  --binfmt) binfmt; exit 0 ;;
esac
[[ $# -ge 1 ]] || die "usage: hack/cross.sh PROFILE [BINARY...] | --env | --binfmt"
profile=$1
shift
(($#)) || set -- edgefleet-operator edgefleet-optimizer edgefleet-sidecar edgefleet-camera-app
cargo_env_reset
eval "$(exports)"
bins=()
for b in "$@"; do bins+=(--bin "$b"); done
log "cross-building ${*} for $TRIPLE ($profile, $($RUSTC --version | cut -d' ' -f1-2))"
cargo build --locked --profile "$profile" --target "$TRIPLE" "${bins[@]}" >&2
dir=$profile
[[ $profile == dev ]] && dir=debug
echo "$CARGO_TARGET_DIR/$TRIPLE/$dir"
