#!/usr/bin/env bash
# Builds ztunnel, ambient mode's node proxy (a Rust program), from the source archive beside the
# repository (../shared/judges/ztunnel/, release-1.31; see its README) into a cache directory
# outside the repo keyed by the archive's checksum. A test tool, not part of meshop: the ambient
# data-plane tests run it as the node's ztunnel.
#
#   tests/testenv/build-ztunnel.sh     # build if missing, print the directory holding `ztunnel`
#   MESHOP_ZTUNNEL_BIN=/dir ...         # use an existing binary instead
#
# Needs protoc (Debian's protobuf-compiler; installed here when missing and apt-get works).
# The optional BoringSSL provider comes from a git repository this machine cannot reach, so it is
# cut from Cargo.toml and ztunnel is built with ring (`tls-ring`), as the archive's README says.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SRC_DIR="${MESHOP_ZTUNNEL_SRC:-${ROOT}/../shared/judges/ztunnel}"
CACHE_ROOT="${MESHOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshop}"

log() { echo "[ztunnel $(date +%H:%M:%S)] $*" >&2; }

if [[ -n "${MESHOP_ZTUNNEL_BIN:-}" ]]; then
  [[ -x "${MESHOP_ZTUNNEL_BIN}/ztunnel" ]] || { log "MESHOP_ZTUNNEL_BIN=${MESHOP_ZTUNNEL_BIN} has no ztunnel"; exit 1; }
  echo "${MESHOP_ZTUNNEL_BIN}"
  exit 0
fi

archive=$(ls "${SRC_DIR}"/ztunnel-*.tar.gz 2>/dev/null | head -1 || true)
[[ -n "${archive}" ]] || { log "no ztunnel source archive in ${SRC_DIR}: clone meshop next to ../shared (see docs/testing.md)"; exit 1; }
key=$(sha256sum "${archive}" | cut -c1-16)
OUT="${CACHE_ROOT}/ztunnel/${key}"
if [[ -f "${OUT}/.complete" ]]; then
  echo "${OUT}"
  exit 0
fi

if ! command -v protoc >/dev/null; then
  log "installing protobuf-compiler (protoc) for ztunnel's build.rs"
  if [[ $(id -u) -eq 0 ]]; then
    (apt-get install -y protobuf-compiler >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y protobuf-compiler >/dev/null 2>&1; })
  fi
  command -v protoc >/dev/null || { log "protoc is missing: apt-get install protobuf-compiler"; exit 1; }
fi

start=$(date +%s)
mkdir -p "${OUT}"
work="${OUT}/src"
rm -rf "${work}" && mkdir -p "${work}"
tar xzf "${archive}" -C "${work}"
dir=$(find "${work}" -mindepth 1 -maxdepth 1 -type d | head -1)
sed -i -e '/^tls-boring = /d' -e '/^boring-rustls-provider = /d' -e '/^boring = /d' -e '/^boring-sys = /d' "${dir}/Cargo.toml"
log "building ztunnel (release, tls-ring) in ${dir}; about 10 minutes on 2 cores"
(cd "${dir}" && CARGO_TARGET_DIR="${OUT}/target" nice -n 10 cargo build --release --no-default-features --features tls-ring --bin ztunnel >"${OUT}/build.log" 2>&1) \
  || { log "build failed; see ${OUT}/build.log"; tail -20 "${OUT}/build.log" >&2; exit 1; }
cp "${OUT}/target/release/ztunnel" "${OUT}/ztunnel"
rm -rf "${OUT}/target" "${work}"
touch "${OUT}/.complete"
log "done in $(( $(date +%s) - start ))s"
echo "${OUT}"
