#!/usr/bin/env bash
# Builds Istio's own binaries (pilot-discovery, istioctl, pilot-agent, and ambient mode's CNI
# plugin istio-cni and node agent install-cni) from the istio.io/istio Go
# module into a cache directory outside the repo keyed by the module version. A finished build is
# reused. meshop's tests run them as judges of what meshop installs and injects.
#
#   tests/testenv/build-istio.sh          # build if missing, print the directory
#   MESHOP_ISTIO_BIN=/dir ...             # use existing binaries instead
#
# Why build: this machine reaches the Go module proxy but no download site. The proxy serves
# istio.io/istio only as pseudo-versions; its go.mod has no replace directives, so
# `go install <package>@<version>` builds straight from the module without a wrapper module.
set -euo pipefail

# release-1.31 branch after 1.31.0-rc.0 (commit eed52ebb66ad, 2026-08-27).
ISTIO_MODULE_VERSION="${ISTIO_MODULE_VERSION:-v0.0.0-20260827124520-eed52ebb66ad}"
# What the binaries report as their version; Istio's own development builds call themselves
# `<VERSION file>-dev`. It is also the image tag `istioctl manifest generate` writes, so it must
# be a valid tag (no `+`): the commit goes into the git revision instead.
ISTIO_BUILD_VERSION="${ISTIO_BUILD_VERSION:-1.31-dev}"
CACHE_ROOT="${MESHOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshop}"
OUT="${CACHE_ROOT}/istio/${ISTIO_MODULE_VERSION}"
# binary name -> package inside istio.io/istio
declare -A PACKAGES=(
  [pilot-discovery]=pilot/cmd/pilot-discovery
  [pilot-agent]=pilot/cmd/pilot-agent
  [istioctl]=istioctl/cmd/istioctl
  [istio-cni]=cni/cmd/istio-cni
  [install-cni]=cni/cmd/install-cni
)
BINARIES=(pilot-discovery pilot-agent istioctl istio-cni install-cni)

log() { echo "[istio $(date +%H:%M:%S)] $*" >&2; }

if [[ -n "${MESHOP_ISTIO_BIN:-}" ]]; then
  for b in "${BINARIES[@]}"; do
    [[ -x "${MESHOP_ISTIO_BIN}/$b" ]] || { log "MESHOP_ISTIO_BIN=${MESHOP_ISTIO_BIN} has no $b"; exit 1; }
  done
  echo "${MESHOP_ISTIO_BIN}"
  exit 0
fi

# The CNI node agent (install-cni) programs pod and node network namespaces with iptables and
# ipset: the ambient data-plane tests run it, inside namespaces they make. Debian packages.
if ! command -v iptables-restore >/dev/null || ! command -v ipset >/dev/null; then
  log "installing iptables and ipset (Debian) for the CNI node agent"
  if [[ $(id -u) -eq 0 ]]; then
    apt-get install -y iptables ipset >/dev/null 2>&1 \
      || { apt-get update >/dev/null 2>&1 && apt-get install -y iptables ipset >/dev/null 2>&1; } \
      || log "could not install iptables and ipset: apt-get install iptables ipset"
  else
    log "iptables and ipset are missing: apt-get install iptables ipset (as root)"
  fi
fi

# Complete when every binary is there: a binary added to the list is built into an existing cache.
complete=true
for b in "${BINARIES[@]}"; do [[ -x "${OUT}/$b" ]] || complete=false; done
if [[ -f "${OUT}/.complete" ]] && ${complete}; then
  echo "${OUT}"
  exit 0
fi

mkdir -p "${OUT}"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=local
start=$(date +%s)

# istio's version package (read by `version` subcommands and sent by istiod to proxies).
ldflags="-s -w"
for kv in "buildVersion=${ISTIO_BUILD_VERSION}" "buildGitRevision=${ISTIO_MODULE_VERSION##*-}" \
          "buildStatus=Clean" "buildTag=${ISTIO_MODULE_VERSION}" "buildHub=docker.io/istio"; do
  ldflags+=" -X istio.io/istio/pkg/version.${kv}"
done

log "building Istio ${ISTIO_MODULE_VERSION} into ${OUT} (a cold build takes 7-10 minutes on 2 cores)"
log "downloading istio.io/istio@${ISTIO_MODULE_VERSION}"
go mod download "istio.io/istio@${ISTIO_MODULE_VERSION}"
for b in "${BINARIES[@]}"; do
  [[ -x "${OUT}/$b" ]] && continue
  t=$(date +%s)
  log "building ${b}"
  # go install names the binary after the package's last element, which is the binary name.
  GOBIN="${OUT}" go install -trimpath -ldflags "${ldflags}" "istio.io/istio/${PACKAGES[$b]}@${ISTIO_MODULE_VERSION}"
  log "built ${b} in $(( $(date +%s) - t ))s"
done
for b in "${BINARIES[@]}"; do [[ -x "${OUT}/$b" ]] || { log "missing ${b} after build"; exit 1; }; done
touch "${OUT}/.complete"
log "done in $(( $(date +%s) - start ))s"
echo "${OUT}"
