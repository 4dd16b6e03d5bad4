#!/usr/bin/env bash
# Builds the Istio judges (tests/istio-judges/<name>/: small Go programs on Istio's own packages,
# at the istio.io/istio module version Istio's binaries are built from, see build-istio.sh) into
# a cache directory outside the repo keyed by a hash of their sources. Kept apart from
# build-judges.sh so that adding one does not rebuild the GitOps judges.
#
#   tests/testenv/build-istio-judges.sh   # build if missing, print the directory
#   MESHOP_ISTIO_JUDGES_BIN=/dir ...      # use existing binaries instead (meshconfig)
#
# meshconfig: `meshconfig table` dumps the fields of Istio's MeshConfig from istio.io/api's proto
# descriptors (operator/src/api/meshconfig/fields.json is its output, `make meshconfig-table`);
# `meshconfig judge` runs istiod's own mesh.ApplyMeshConfigDefaults on mesh configs.
set -euo pipefail

JUDGES=(meshconfig)
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/istio-judges"
CACHE_ROOT="${MESHOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshop}"

log() { echo "[istio-judges $(date +%H:%M:%S)] $*" >&2; }

if [[ -n "${MESHOP_ISTIO_JUDGES_BIN:-}" ]]; then
  for j in "${JUDGES[@]}"; do
    [[ -x "${MESHOP_ISTIO_JUDGES_BIN}/$j" ]] || { log "MESHOP_ISTIO_JUDGES_BIN=${MESHOP_ISTIO_JUDGES_BIN} has no $j"; exit 1; }
  done
  echo "${MESHOP_ISTIO_JUDGES_BIN}"
  exit 0
fi

key=$( (cd "${HERE}" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) | LC_ALL=C sort \
  | xargs sha256sum) | sha256sum | cut -c1-16)
OUT="${CACHE_ROOT}/istio-judges/${key}"
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
  (cd "${HERE}/${j}" && go build -trimpath -ldflags "-s -w" -o "${OUT}/${j}" .)
  log "built ${j} in $(( $(date +%s) - t ))s"
done
touch "${OUT}/.complete"
log "done in $(( $(date +%s) - start ))s"
echo "${OUT}"
