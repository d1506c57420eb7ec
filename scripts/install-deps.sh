#!/usr/bin/env bash
# Installs what building and testing kcred needs on Debian: MIT Kerberos
# (KDC, kadmind, client tools, headers) and libclang for bindgen; kubectl
# (the Kubernetes tests drive the test API server with it); protoc and the
# well-known protos for the etcd client, and etcd itself (the HA store's
# tests start throwaway clusters on loopback); for the deployment tests,
# buildah and mmdebstrap (images), promtool (alert rules) and a Python venv
# with Helm's engine and Kubernetes schemas; Samba's AD domain controller
# and OpenLDAP's client tools (the Active Directory backend talks LDAPS with
# ldapsearch/ldapmodify, and its tests run a throwaway Samba DC). Safe to
# re-run: it installs only what is missing.
set -euo pipefail

packages=(krb5-kdc krb5-admin-server krb5-user libkrb5-dev libclang-dev pkg-config openssl
  protobuf-compiler libprotobuf-dev etcd-server etcd-client
  buildah mmdebstrap uidmap prometheus python3-venv
  samba samba-ad-dc samba-ad-provision ldb-tools ldap-utils libsasl2-modules-gssapi-mit iproute2)
# kubectl drives the test Kubernetes API server; Debian ships it as
# kubernetes-client. Any kubectl already on the PATH will do (tested with
# Debian's 1.20 and 1.32).
command -v kubectl >/dev/null 2>&1 || packages+=(kubernetes-client)
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

# Python tools of tests/deploy, in their own venv (rebuilt when
# tests/deploy/requirements.txt changes).
venv=${KCRED_TEST_VENV:-/var/cache/kcred-test/venv}
requirements="$(dirname "$0")/../tests/deploy/requirements.txt"
if ! cmp -s "$requirements" "$venv/requirements.txt" 2>/dev/null; then
  echo "creating Python venv $venv"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$venv/requirements.txt"
fi
