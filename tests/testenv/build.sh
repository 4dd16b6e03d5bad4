#!/usr/bin/env bash
# Builds the upstream control-plane binaries meshop's tests run against, from their Go modules,
# into a cache directory outside the repo keyed by versions. A finished build is reused.
#
#   tests/testenv/build.sh            # build if missing, print the directory
#   KUBEBUILDER_ASSETS=/dir ...       # use existing binaries instead (envtest convention)
#
# Why build: this machine reaches the Go module proxy but no download site, so released
# binaries cannot be fetched. Each project lives in its own throwaway Go module because
# kubernetes and etcd both carry replace directives that a dependent module must repeat.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
CACHE_ROOT="${MESHOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshop}"
KEY="k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}-kwok-${KWOK_VERSION}"
OUT="${CACHE_ROOT}/testenv/${KEY}"
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)

log() { echo "[testenv $(date +%H:%M:%S)] $*" >&2; }

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  for b in etcd kube-apiserver; do
    [[ -x "${KUBEBUILDER_ASSETS}/$b" ]] || { log "KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS} has no $b"; exit 1; }
  done
  echo "${KUBEBUILDER_ASSETS}"
  exit 0
fi

if [[ -f "${OUT}/.complete" ]]; then
  echo "${OUT}"
  exit 0
fi

mkdir -p "${OUT}"
WORK="$(mktemp -d "${CACHE_ROOT}/testenv/build.XXXXXX")"
trap 'rm -rf "${WORK}"' EXIT
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=local
start=$(date +%s)

build_kubernetes() {
  local dir="${WORK}/kubernetes"
  mkdir -p "${dir}" && cd "${dir}"
  log "kubernetes ${K8S_VERSION}: resolving module"
  go mod init meshop.dev/testenv/kubernetes >/dev/null 2>&1
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  # Every staging module required at v0.0.0 must be replaced by its published v0.X.Y twin.
  local staging="v0.${K8S_VERSION#v1.}"
  {
    echo "require k8s.io/kubernetes ${K8S_VERSION}"
    grep -E '^\s+k8s\.io/[a-z0-9-]+ v0\.0\.0(\s|$)' "${gomod}" | awk -v v="${staging}" '{print "replace " $1 " => " $1 " " v}'
  } >> go.mod
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  go mod tidy -e >"${WORK}/tidy-$(basename "$PWD").log" 2>&1 || { log "go mod tidy failed:"; tail -20 "${WORK}/tidy-$(basename "$PWD").log" >&2; exit 1; }
  local ver="${K8S_VERSION#v}" major minor
  major="${ver%%.*}"; minor="${ver#*.}"; minor="${minor%%.*}"
  local ldflags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor}"
    ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
  done
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    log "kubernetes ${K8S_VERSION}: building ${cmd}"
    go build -trimpath -ldflags "-s -w ${ldflags}" -o "${OUT}/${cmd}" "k8s.io/kubernetes/cmd/${cmd}"
  done
}

build_etcd() {
  local dir="${WORK}/etcd"
  mkdir -p "${dir}" && cd "${dir}"
  log "etcd ${ETCD_VERSION}: resolving module"
  go mod init meshop.dev/testenv/etcd >/dev/null 2>&1
  cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" >/dev/null 2>&1
  go mod tidy >/dev/null 2>&1
  log "etcd ${ETCD_VERSION}: building"
  go build -trimpath -ldflags "-s -w" -o "${OUT}/etcd" .
}

# The kwok Stages that make fake nodes Ready and pods Running/Ready/completed/deleted without delay
# (the "fast" set; the "general" pod stages need a pod-create stage and add minutes of jitter).
copy_kwok_stages() {
  local moddir
  moddir="$(go mod download -json "sigs.k8s.io/kwok@${KWOK_VERSION}" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  mkdir -p "${OUT}/kwok-stages.tmp"
  for s in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
           pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
    cp "${moddir}/kustomize/stage/${s}.yaml" "${OUT}/kwok-stages.tmp/"
  done
  chmod -R u+w "${OUT}/kwok-stages.tmp"
  mv "${OUT}/kwok-stages.tmp" "${OUT}/kwok-stages"
}

build_kwok() {
  local dir="${WORK}/kwok"
  mkdir -p "${dir}" && cd "${dir}"
  log "kwok ${KWOK_VERSION}: resolving module"
  go mod init meshop.dev/testenv/kwok >/dev/null 2>&1
  local moddir
  moddir="$(go mod download -json "sigs.k8s.io/kwok@${KWOK_VERSION}" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  # kwok's own go.mod may carry replace directives; repeat them here.
  echo "require sigs.k8s.io/kwok ${KWOK_VERSION}" >> go.mod
  awk '/^replace \(/{f=1;next} f&&/^\)/{f=0} f{print "replace " $0} /^replace [^(]/{print}' "${moddir}/go.mod" >> go.mod
  cat > tools.go <<'GO'
//go:build tools

package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
GO
  go mod tidy -e >"${WORK}/tidy-$(basename "$PWD").log" 2>&1 || { log "go mod tidy failed:"; tail -20 "${WORK}/tidy-$(basename "$PWD").log" >&2; exit 1; }
  log "kwok ${KWOK_VERSION}: building"
  go build -trimpath -ldflags "-s -w" -o "${OUT}/kwok" sigs.k8s.io/kwok/cmd/kwok
}

log "building control plane into ${OUT} (cold build takes 15-25 minutes on 2 cores)"
[[ -x "${OUT}/etcd" ]] || build_etcd
[[ -x "${OUT}/kwok" ]] || build_kwok
[[ -d "${OUT}/kwok-stages" ]] || copy_kwok_stages
[[ -x "${OUT}/kubectl" ]] || build_kubernetes
for b in "${BINARIES[@]}"; do [[ -x "${OUT}/$b" ]] || { log "missing ${b} after build"; exit 1; }; done
touch "${OUT}/.complete"
log "done in $(( $(date +%s) - start ))s"
echo "${OUT}"
