#!/usr/bin/env bash
# Installs what building and testing kcred needs on Debian: MIT Kerberos
# (KDC, kadmind, client tools, headers), libclang for bindgen, protoc and
# the well-known protos for the etcd client, and etcd itself (the HA store's
# tests start throwaway clusters on loopback). Safe to re-run: it installs
# only what is missing.
set -euo pipefail

packages=(krb5-kdc krb5-admin-server krb5-user libkrb5-dev libclang-dev pkg-config openssl
  protobuf-compiler libprotobuf-dev etcd-server etcd-client)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install a Rust toolchain (1.90 or newer) with rustup first" >&2
  exit 1
fi
