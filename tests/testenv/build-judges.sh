#!/usr/bin/env bash
# Builds the judges (tests/judges/<name>/: small Go programs around the libraries Argo CD, Flux
# and kstatus users run, and Prometheus's own promtool) into a cache directory outside the repo,
# keyed by a hash of their sources, so an edited judge is rebuilt and an unchanged one reused.
#
#   tests/testenv/build-judges.sh         # build if missing, print the directory
#   MESHOP_JUDGES_BIN=/dir ...            # use existing binaries instead (kstatus, flux, argocd,
#                                         # promtool)
#
# Each judge is its own Go module (go.mod + go.sum pin what it runs): kstatus on
# sigs.k8s.io/cli-utils, flux on github.com/fluxcd/pkg/runtime, argocd on gopher-lua; promtool's
# module has no code of its own: it pins github.com/prometheus/prometheus as a `tool` and builds
# its cmd/promtool, without the service-discovery plugins (tag remove_all_sd), which promtool
# only needs for `check config` and `sd`.
set -euo pipefail

JUDGES=(kstatus flux argocd promtool)
# What to build in each judge's module (default: the module's own main package) and with which tags.
declare -A PACKAGE=([promtool]=github.com/prometheus/prometheus/cmd/promtool)
declare -A TAGS=([promtool]=remove_all_sd)
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/judges"
CACHE_ROOT="${MESHOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshop}"

log() { echo "[judges $(date +%H:%M:%S)] $*" >&2; }

if [[ -n "${MESHOP_JUDGES_BIN:-}" ]]; then
  for j in "${JUDGES[@]}"; do
    [[ -x "${MESHOP_JUDGES_BIN}/$j" ]] || { log "MESHOP_JUDGES_BIN=${MESHOP_JUDGES_BIN} has no $j"; exit 1; }
  done
  echo "${MESHOP_JUDGES_BIN}"
  exit 0
fi

# The key covers the sources and what is built from them with which tags.
key=$({ (cd "${HERE}" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) | LC_ALL=C sort \
  | xargs sha256sum); declare -p PACKAGE TAGS; } | sha256sum | cut -c1-16)
OUT="${CACHE_ROOT}/judges/${key}"
if [[ -f "${OUT}/.complete" ]]; then
  echo "${OUT}"
  exit 0
fi

mkdir -p "${OUT}"
export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly" GOTOOLCHAIN=local
start=$(date +%s)
for j in "${JUDGES[@]}"; do
  t=$(date +%s)
  log "building ${j} into ${OUT}"
  (cd "${HERE}/${j}" && go build -trimpath -ldflags "-s -w" -tags "${TAGS[$j]:-}" -o "${OUT}/${j}" "${PACKAGE[$j]:-.}")
  log "built ${j} in $(( $(date +%s) - t ))s"
done
touch "${OUT}/.complete"
log "done in $(( $(date +%s) - start ))s"
echo "${OUT}"
