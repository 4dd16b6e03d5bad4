#!/usr/bin/env bash
# Builds Helm from its Go module (helm.sh/helm/v3) into a cache directory outside the repo, keyed
# by version. A finished build is reused. meshop's chart tests run it: lint, template, install,
# upgrade, uninstall, package.
#
#   tests/testenv/build-helm.sh           # build if missing, print the directory
#   MESHOP_HELM_BIN=/dir ...              # use an existing helm instead (a directory holding `helm`)
#
# Why build: this machine reaches the Go module proxy but no download site. helm.sh/helm/v3 has no
# replace directives, so `go install <package>@<version>` builds it without a wrapper module.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE_ROOT="${MESHOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshop}"
OUT="${CACHE_ROOT}/helm/${HELM_VERSION}"

log() { echo "[helm $(date +%H:%M:%S)] $*" >&2; }

if [[ -n "${MESHOP_HELM_BIN:-}" ]]; then
  [[ -x "${MESHOP_HELM_BIN}/helm" ]] || { log "MESHOP_HELM_BIN=${MESHOP_HELM_BIN} has no helm"; exit 1; }
  echo "${MESHOP_HELM_BIN}"
  exit 0
fi

if [[ -f "${OUT}/.complete" ]]; then
  echo "${OUT}"
  exit 0
fi

mkdir -p "${OUT}"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=local
start=$(date +%s)
log "building helm ${HELM_VERSION} into ${OUT} (a cold build takes a few minutes on 2 cores)"
# `helm version` reads these; without them it reports v3.x-dev.
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
GOBIN="${OUT}" go install -trimpath -ldflags "${ldflags}" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
[[ -x "${OUT}/helm" ]] || { log "missing helm after build"; exit 1; }
touch "${OUT}/.complete"
log "done in $(( $(date +%s) - start ))s"
echo "${OUT}"
