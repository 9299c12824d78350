# The one entry point for people and CI. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build every binary (debug)
	$(CARGO) build --workspace --bins

.PHONY: release
release: ## Build every binary (release)
	$(CARGO) build --workspace --bins --release

.PHONY: crds
crds: ## Regenerate crds/*.yaml and the chart's copy from the Rust types
	$(CARGO) run -q --bin crdgen

.PHONY: controlplane
controlplane: ## Build kube-apiserver, kube-controller-manager, kube-scheduler, etcd, kubelet, kube-proxy, pause (cached)
	@bash hack/build-controlplane.sh >/dev/null
	@bash hack/build-node.sh >/dev/null

.PHONY: up
up: ## Start or reuse the test ground: control plane, registry, NODES real nodes (default 4, the last ARM64_NODES=1 arm64); use as: eval "$(make -s up)"
	@bash hack/up.sh

.PHONY: down
down: ## Stop exactly what `make up` started: processes, namespaces, links, mounts, cgroups
	@bash hack/down.sh

.PHONY: datasets
datasets: ## Build the .npz datasets from Debian's Fashion-MNIST (cached)
	@bash hack/datasets.sh

.PHONY: fixtures
fixtures: ## Retrain and re-export the committed Fashion-MNIST CNN fixture (JAX, a few minutes)
	cd optimizer/fixtures && "$$(bash ../../hack/python-env.sh)" train_fashion_cnn.py --epochs 4

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: lint
lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: unit
unit: ## Unit tests only (no control plane needed)
	$(CARGO) test --workspace --lib --bins
	$(CARGO) test -p edgefleet-api --tests
	$(CARGO) test --test crds -- committed_crds_are_fresh generated_schema_carries_the_admission_rules

.PHONY: chart-check
chart-check: ## helm lint, helm template | kubeconform -strict, examples, Argo CD health + kstatus on captured statuses
	@bash hack/chart-check.sh

.PHONY: images
PROFILE ?= release
images: ## Build the operator, optimizer and sidecar images (an amd64+arm64 OCI index each) without Docker and push them to REGISTRY (default: the test ground's); writes target/images/values.yaml
	@bash hack/images.sh $(PROFILE) $(REGISTRY)

.PHONY: tools
tools: ## Build helm, kubeconform, crane (Go modules), kubectl-edgefleet and edgefleet-optimizer; prints a directory for PATH
	@bash hack/tools.sh

.PHONY: fuzz
FUZZ_SECONDS ?= 300
fuzz: ## Fuzz every parser of untrusted bytes (OIP requests, images, ONNX, npz, ModelPack) for FUZZ_SECONDS each; writes bench-results/fuzz.json
	@bash hack/fuzz.sh $(FUZZ_SECONDS)

.PHONY: test
test: ## The whole suite: lint, unit, and integration tests against the real control plane
	@bash hack/test.sh

.PHONY: demo
.PHONY: bench-artifact
bench-artifact: ## Artifact bytes over the air per technique, pull throughput, resume overhead, apply->Published; writes bench-results/artifact.json
	hack/bench-artifact.sh

.PHONY: bench-arm64
bench-arm64: ## amd64 vs arm64 sidecar (qemu-user): where answers differ per candidate, shipped binary sizes; writes bench-results/arm64.json
	hack/bench-arm64.sh

.PHONY: bench-binary-size
bench-binary-size: ## What the sidecar's stripped size is made of: the sidecar vs tract-only programs; writes bench-results/binary-size.json
	hack/bench-binary-size.sh

.PHONY: bench-images
bench-images: ## Release images (make images) and their sizes; writes bench-results/images.json
	@mkdir -p bench-results
	@bash hack/images.sh release $(REGISTRY) | tail -1 | tee bench-results/images.json

.PHONY: bench-nodes
bench-nodes: ## The test ground's nodes: build, make up, per-node memory, pod created -> sidecar serving (cold/cached image); writes bench-results/nodes.json
	hack/bench-nodes.sh

.PHONY: bench-optimizer
bench-optimizer: ## Optimizer per technique vs fp32 and ONNX Runtime's quantizers; writes bench-results/optimizer.json
	hack/bench-optimizer.sh

.PHONY: bench-rollout
PODS ?= 1000
bench-rollout: ## Rollout of PODS simulated pods (default 1000) against the real API server; writes bench-results/rollout-PODS.json
	hack/bench-rollout.sh $(PODS)

.PHONY: bench-sidecar
bench-sidecar: ## Sidecar vs in-process runtime latency, throughput, cold start, RSS, binary size; writes bench-results/sidecar.json
	hack/bench-sidecar.sh

demo: ## End to end on the local test ground: what edgefleet does today
	@bash hack/demo.sh
