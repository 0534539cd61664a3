#!/usr/bin/env bash
# Builds quicall:latest from the Dockerfile on a machine that cannot reach
# Docker Hub or gcr.io (Debian's package mirror and crates.io suffice), with
# stand-ins for the two base images:
#
#   quicall-offline/runtime:bookworm  Debian bookworm (minbase: glibc,
#                                     libgcc, CA certificates), for
#                                     gcr.io/distroless/cc-debian12:nonroot
#   quicall-offline/rust:bookworm     the same with gcc and this machine's
#                                     Rust toolchain, for rust:1.95-slim-bookworm
#
# Needs root, debootstrap and a running Docker daemon:
#   sudo deploy/offline-images.sh
set -euo pipefail

mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
toolchain=$(rustc --print sysroot)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

debootstrap --variant=minbase --include=ca-certificates bookworm "$work/root" "$mirror"
tar -C "$work/root" -c . | docker import - quicall-offline/runtime:bookworm

chroot "$work/root" apt-get install -y -q --no-install-recommends gcc libc6-dev
# The build fetches crates: it trusts what this machine trusts (a proxy's
# CA included).
cp /etc/ssl/certs/ca-certificates.crt "$work/root/etc/ssl/certs/ca-certificates.crt"
mkdir -p "$work/root/usr/local/rust"
cp -a "$toolchain/." "$work/root/usr/local/rust/"
tar -C "$work/root" -c . | docker import \
    -c 'ENV PATH=/usr/local/rust/bin:/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV CARGO_HOME=/usr/local/cargo' \
    - quicall-offline/rust:bookworm

cd "$(dirname "$0")/.."
docker build \
    --build-arg BUILD_IMAGE=quicall-offline/rust:bookworm \
    --build-arg RUNTIME_IMAGE=quicall-offline/runtime:bookworm \
    -t quicall:latest .
docker image ls quicall:latest
