#!/usr/bin/env bash
# Builds kcred's container images with buildah:
#   ${IMAGE_PREFIX}/csi-driver:${VERSION}   (deploy/images/csi-driver.Containerfile)
#   ${IMAGE_PREFIX}/controller:${VERSION}   (deploy/images/controller.Containerfile)
# IMAGE_PREFIX defaults to "kcred", so the driver image is kcred/csi-driver,
# the Helm chart's default images.driver.repository. Push them with
# `buildah push kcred/csi-driver:0.1.0 docker://registry.example.com/kcred/csi-driver:0.1.0`.
#
# Usage: scripts/build-images.sh [options] [driver] [controller]   (default: both)
#   --prebuilt DIR   use binaries already built on this host (e.g. target/release,
#                    after `cargo build --release --bins`) instead of compiling
#                    in the builder image: for offline builds. Build them on the
#                    same Debian release as the base image.
#   --base IMAGE     runtime base image (default debian:bookworm-slim)
#   --builder IMAGE  Rust toolchain image (default docker.io/library/rust:1.90-bookworm)
#   --list           print the image names that would be built, and exit
# Environment:
#   IMAGE_PREFIX  name prefix (default kcred), e.g. registry.example.com/kcred
#   VERSION       image tag (default: the workspace version in Cargo.toml)
#   BUILDAH_OPTS  global buildah options, e.g. "--root DIR --storage-driver vfs"
#   BUD_OPTS      extra `buildah bud` options, e.g. "--pull-never --isolation chroot"
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=${IMAGE_PREFIX:-kcred}
version=${VERSION:-$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)}
revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
base=debian:bookworm-slim
builder=docker.io/library/rust:1.90-bookworm
prebuilt=""
list=false
components=()
while [ $# -gt 0 ]; do
  case "$1" in
    --prebuilt) prebuilt=${2:?--prebuilt needs a directory}; shift 2 ;;
    --base) base=${2:?--base needs an image}; shift 2 ;;
    --builder) builder=${2:?--builder needs an image}; shift 2 ;;
    --list) list=true; shift ;;
    driver|controller) components+=("$1"); shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-images.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ ${#components[@]} -gt 0 ] || components=(driver controller)

image_name() {
  case "$1" in
    driver) echo "$prefix/csi-driver:$version" ;;
    controller) echo "$prefix/controller:$version" ;;
  esac
}
binaries_of() {
  case "$1" in
    driver) echo kcred-csi-driver ;;
    controller) echo kcred-controller kcredctl ;;
  esac
}
containerfile_of() {
  case "$1" in
    driver) echo deploy/images/csi-driver.Containerfile ;;
    controller) echo deploy/images/controller.Containerfile ;;
  esac
}

if $list; then
  for c in "${components[@]}"; do image_name "$c"; done
  exit 0
fi
command -v buildah >/dev/null || { echo "buildah not found: apt-get install buildah" >&2; exit 1; }

binaries=build
if [ -n "$prebuilt" ]; then
  binaries=prebuilt
  # The build context is the repository; .containerignore leaves out
  # target/ except this directory.
  rm -rf target/image-bin
  mkdir -p target/image-bin
  for c in "${components[@]}"; do
    for b in $(binaries_of "$c"); do
      [ -x "$prebuilt/$b" ] || { echo "$prebuilt/$b is missing: cargo build --release --bins first" >&2; exit 1; }
      cp "$prebuilt/$b" target/image-bin/
    done
  done
fi

for c in "${components[@]}"; do
  name=$(image_name "$c")
  echo "building $name"
  # shellcheck disable=SC2086 # BUILDAH_OPTS and BUD_OPTS are word lists
  buildah ${BUILDAH_OPTS:-} bud ${BUD_OPTS:-} \
    --layers=false \
    -f "$(containerfile_of "$c")" \
    --build-arg BASE="$base" \
    --build-arg BUILDER="$builder" \
    --build-arg BINARIES="$binaries" \
    --build-arg VERSION="$version" \
    --build-arg REVISION="$revision" \
    -t "$name" .
done
