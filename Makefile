# meshop — run `make help` for the targets.
SHELL := /usr/bin/env bash
CARGO ?= cargo

.PHONY: help demo cluster test unit testenv istio ztunnel helm judges istio-judges meshconfig-table image chart build generate crds golden bench loadtest lint fmt clean-testenv tools

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

tools: ## Check that the toolchains the build needs (cargo, go) are installed.
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)"; exit 1; }
	@command -v go >/dev/null || { echo "go not found: the test control plane is built from Go sources"; exit 1; }

demo: tools testenv ## The main job: control plane, operator, a demo MeshInstall; waits for Ready, prints it, runs until Ctrl-C.
	$(CARGO) build -q -p meshop -p meshop-testenv --bins
	$(CARGO) run -q -p meshop-testenv --bin meshop-demo

cluster: tools testenv ## Start a local control plane (controllers mode, CRDs installed) until Ctrl-C.
	$(CARGO) run -q -p meshop-testenv --bin meshop-cluster

test: tools testenv istio helm judges istio-judges ## Unit and integration tests against a real kube-apiserver, Istio's binaries, helm and the judges (GitOps health, promtool; built when not cached).
	$(CARGO) build --workspace --locked --bins
	$(CARGO) test --workspace --locked --no-fail-fast

unit: ## Unit tests only (no control plane).
	$(CARGO) test --workspace --locked --lib --bins

testenv: tools ## Build (or reuse) etcd, kube-apiserver, controllers, kubectl and kwok in ~/.cache/meshop.
	@bash tests/testenv/build.sh >/dev/null

istio: tools ## Build (or reuse) Istio's pilot-discovery, istioctl and pilot-agent in ~/.cache/meshop (the tests' outside judges).
	@bash tests/testenv/build-istio.sh >/dev/null

ztunnel: tools ## Build (or reuse) ztunnel, ambient mode's node proxy, from ../shared/judges/ztunnel in ~/.cache/meshop.
	@bash tests/testenv/build-ztunnel.sh >/dev/null

helm: tools ## Build (or reuse) helm from helm.sh/helm/v3 in ~/.cache/meshop (the chart tests run it).
	@bash tests/testenv/build-helm.sh >/dev/null

judges: tools ## Build (or reuse) the judges (kstatus, Flux CEL, Argo CD Lua, promtool) in ~/.cache/meshop.
	@bash tests/testenv/build-judges.sh >/dev/null

istio-judges: tools ## Build (or reuse) the Istio judges (meshconfig: Istio's MeshConfig fields and istiod's verdict on a mesh config) in ~/.cache/meshop.
	@bash tests/testenv/build-istio-judges.sh >/dev/null

meshconfig-table: tools ## Regenerate operator/src/api/meshconfig/fields.json from Istio's proto descriptors (tests/tests/meshconfig.rs checks it).
	@d="$$(bash tests/testenv/build-istio-judges.sh)"; $$d/meshconfig table > operator/src/api/meshconfig/fields.json

image: tools ## Build the operator image with no container engine: target/image/oci/ (OCI layout) and meshop-<version>.oci.tar.
	@bash image/build.sh

chart: tools helm generate ## Regenerate, lint and package the Helm chart into target/chart/meshop-<version>.tgz.
	@h="$$(bash tests/testenv/build-helm.sh)/helm"; $$h lint --strict deploy/chart/meshop && $$h package deploy/chart/meshop -d $${CARGO_TARGET_DIR:-target}/chart

build: ## Build the meshop binary (target/release/meshop).
	$(CARGO) build --release -p meshop

generate: ## Write every generated file: crds/, deploy/ (CRD, RBAC, operator, Helm chart), golden files, docs tables.
	$(CARGO) run -q -p meshop --example generate

crds: generate ## Alias of generate.

golden: generate ## Alias of generate.

bench: ## Criterion benchmarks of sidecar injection (figures in docs/performance.md).
	$(CARGO) bench -p meshop --bench inject -- --warm-up-time 1 --measurement-time 3

LOADTEST_ARGS ?= --connections 1 --seconds 10 --server-cpus 0 --client-cpus 1

loadtest: ## Load test of `meshop run`'s webhook over TLS on a local control plane; LOADTEST_ARGS="--istiod --http 2 ..." (docs/performance.md).
	$(CARGO) build --release -q -p meshop --bin meshop
	$(CARGO) build --release -q -p meshop-testenv --bin meshop-webhook-load
	target/release/meshop-webhook-load $(LOADTEST_ARGS)

lint: ## rustfmt and clippy, warnings as errors.
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt: ## Format the code.
	$(CARGO) fmt --all

clean-testenv: ## Remove the logs and data of earlier test control planes.
	rm -rf target/testenv
