# Contrast — build, test and check everything from here. `make help` lists the targets.
#
# Every Go task loops over all modules of the workspace (MODULES); none is skipped.
# Tools and Kubernetes binaries are built from pinned modules under tools/ into bin/.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

MODULES := attest coordinator webhook initializer cli integration
TOOL_MODULES := tools tools/lint tools/helm tools/etcd tools/k8s tools/containerd

ROOT := $(abspath .)
BIN := $(ROOT)/bin
TOOLS_BIN := $(BIN)/tools
K8S_BIN := $(BIN)/k8s

K8S_VERSION := v1.37.2
K8S_MINOR := 37
K8S_LDFLAGS := -s -w \
	-X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 \
	-X k8s.io/component-base/version.gitMinor=$(K8S_MINOR) \
	-X k8s.io/component-base/version.gitTreeState=clean \
	-X k8s.io/client-go/pkg/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/client-go/pkg/version.gitMajor=1 \
	-X k8s.io/client-go/pkg/version.gitMinor=$(K8S_MINOR) \
	-X k8s.io/client-go/pkg/version.gitTreeState=clean

# Tool modules are built outside the workspace: each pins its own dependency graph.
TOOLGO := cd $(ROOT)/tools && GOWORK=off go

GOLANGCI_LINT := $(TOOLS_BIN)/golangci-lint
BUF := $(TOOLS_BIN)/buf
PROTOC_GEN_GO := $(TOOLS_BIN)/protoc-gen-go
PROTOC_GEN_GO_GRPC := $(TOOLS_BIN)/protoc-gen-go-grpc

K8S_SERVER_BINS := kube-apiserver kube-controller-manager
# The real node of the integration harness (kubelet + containerd + runc).
K8S_NODE_BINS := kubelet kube-scheduler kube-proxy
CONTAINERD_BINS := containerd containerd-shim-runc-v2 ctr
K8S_BINS := $(addprefix $(K8S_BIN)/,$(K8S_SERVER_BINS) $(K8S_NODE_BINS) kubectl etcd helm $(CONTAINERD_BINS))

# Packages given to `go test` in `make test`; override to narrow a run (make test PKGS=./cluster/...).
PKGS ?= ./...
TEST_FLAGS ?= -race -count=1 -timeout 45m
BENCH ?= .
BENCH_FLAGS ?= -benchtime=2s -count=1 -timeout 60m

export CONTRAST_K8S_BIN_DIR := $(K8S_BIN)

##@ General

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} \
		/^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } \
		/^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Build

.PHONY: build
build: go.work ## Build every binary of every module into bin/.
	@for m in $(MODULES); do \
		if [ -d "$$m/cmd" ]; then echo ">> building $$m/cmd/..."; (cd $$m && go build -trimpath -o $(BIN)/ ./cmd/...); fi; \
	done

go.work: hack/workspace.sh
	hack/workspace.sh

.PHONY: workspace
workspace: ## Regenerate go.work from the module list.
	hack/workspace.sh

.PHONY: tools
tools: $(BUF) $(PROTOC_GEN_GO) $(PROTOC_GEN_GO_GRPC) $(GOLANGCI_LINT) ## Build the pinned developer tools (buf, protoc plugins, golangci-lint) into bin/tools.

.PHONY: k8s-bins
k8s-bins: $(K8S_BINS) ## Build etcd, the Kubernetes components, kubectl, helm and containerd into bin/k8s (only the missing ones).

$(addprefix $(K8S_BIN)/,$(K8S_SERVER_BINS) $(K8S_NODE_BINS) kubectl): $(K8S_BIN)/%: tools/k8s/go.mod tools/k8s/go.sum
	@mkdir -p $(K8S_BIN)
	@echo ">> building $* $(K8S_VERSION) from k8s.io/kubernetes (the first build takes several minutes on 2 cores)"
	@start=$$(date +%s); cd tools/k8s && GOWORK=off go build -trimpath -ldflags "$(K8S_LDFLAGS)" -o $@ k8s.io/kubernetes/cmd/$*; \
		echo "   $* built in $$(( $$(date +%s) - start ))s"

$(K8S_BIN)/etcd: tools/etcd/go.mod tools/etcd/go.sum tools/etcd/main.go
	@mkdir -p $(K8S_BIN)
	@echo ">> building etcd from go.etcd.io/etcd/server/v3"
	@start=$$(date +%s); cd tools/etcd && GOWORK=off go build -trimpath -ldflags "-s -w" -o $@ .; \
		echo "   etcd built in $$(( $$(date +%s) - start ))s"

$(K8S_BIN)/helm: tools/helm/go.mod tools/helm/go.sum
	@mkdir -p $(K8S_BIN)
	@echo ">> building helm"
	@start=$$(date +%s); cd tools/helm && GOWORK=off go build -trimpath -ldflags "-s -w" -o $@ helm.sh/helm/v3/cmd/helm; \
		echo "   helm built in $$(( $$(date +%s) - start ))s"

$(addprefix $(K8S_BIN)/,$(CONTAINERD_BINS)): $(K8S_BIN)/%: tools/containerd/go.mod tools/containerd/go.sum
	@mkdir -p $(K8S_BIN)
	@echo ">> building $* from github.com/containerd/containerd/v2"
	@start=$$(date +%s); cd tools/containerd && CGO_ENABLED=0 GOWORK=off go build -trimpath -tags no_btrfs -ldflags "-s -w" -o $@ github.com/containerd/containerd/v2/cmd/$*; \
		echo "   $* built in $$(( $$(date +%s) - start ))s"

$(GOLANGCI_LINT): tools/lint/go.mod tools/lint/go.sum
	@mkdir -p $(TOOLS_BIN)
	@echo ">> building golangci-lint"
	@cd tools/lint && GOWORK=off go build -trimpath -o $@ github.com/golangci/golangci-lint/v2/cmd/golangci-lint

$(BUF) $(PROTOC_GEN_GO) $(PROTOC_GEN_GO_GRPC): tools/go.mod tools/go.sum
	@mkdir -p $(TOOLS_BIN)
	@echo ">> building $(notdir $@)"
	@$(TOOLGO) build -trimpath -o $@ $$(GOWORK=off go list -f '{{.ImportPath}}' tool | grep '/$(notdir $@)$$')

##@ Images

# `make images REGISTRY=ghcr.io/contrast-cc/contrast`: see docs/install.md.
REGISTRY ?=
TAG ?=
IMAGES ?=
IMAGES_VALUES ?=
IMAGES_INSECURE ?=

.PHONY: images
images: go.work ## Build the coordinator, webhook, initializer and mesh-proxy images (reproducible) and push them to REGISTRY=host[:port]/path; prints the digests (TAG=, IMAGES=a,b, IMAGES_VALUES=file for helm -f, IMAGES_INSECURE=1 for plain HTTP).
	@test -n "$(REGISTRY)" || { echo "make images needs REGISTRY=host[:port]/path, e.g. REGISTRY=ghcr.io/contrast-cc/contrast"; exit 1; }
	@cd integration && go run ./cmd/images -registry '$(REGISTRY)' -tag '$(TAG)' -images '$(IMAGES)' \
		$(if $(IMAGES_VALUES),-values-out '$(abspath $(IMAGES_VALUES))') $(if $(IMAGES_INSECURE),-insecure)

##@ Demo

.PHONY: demo
demo: go.work k8s-bins ## The tutorial end to end, narrated: a local cluster with a real node and simulated TEEs, the chart, contrast generate/set/verify/recover; leaves the cluster running (DEMO_FLAGS=-keep=false to stop at the end).
	@cd integration && go run ./cmd/demo -dir '$(abspath $(BIN)/demo)' $(DEMO_FLAGS)

.PHONY: demo-down
demo-down: ## Stop the cluster `make demo` left running.
	@pidf='$(BIN)/demo/demo.pid'; \
	if [ -f "$$pidf" ] && kill -0 "$$(cat $$pidf)" 2>/dev/null; then \
		pid=$$(cat $$pidf); kill -TERM $$pid; echo "stopping the demo (pid $$pid)"; \
		while kill -0 $$pid 2>/dev/null; do sleep 1; done; echo "demo stopped"; \
	else echo "no demo is running"; fi

##@ Test

.PHONY: test
test: go.work k8s-bins ## Run unit and integration tests of every module (builds the Kubernetes binaries first).
	@for m in $(MODULES); do echo ">> go test $$m"; (cd $$m && go test $(TEST_FLAGS) $(PKGS)); done

.PHONY: chart-lint
chart-lint: $(K8S_BIN)/helm ## helm lint --strict charts/contrast with every values file of its tests (also run by `make test`, TestChartLint).
	@for f in integration/testdata/chart/*.values.yaml; do echo ">> helm lint $$f"; $(K8S_BIN)/helm lint --strict charts/contrast --namespace contrast-system --values $$f; done

.PHONY: bench
bench: go.work k8s-bins ## Run the benchmarks of every module; figures are ratios against baselines of the same run.
	@for m in $(MODULES); do echo ">> go test -bench $$m"; (cd $$m && go test -run '^$$' -bench '$(BENCH)' $(BENCH_FLAGS) ./...); done

# Fuzz targets for every parser of untrusted input, as module:package:Target.
FUZZ_TARGETS := \
	attest:./evidence:FuzzUnmarshal attest:./snp:FuzzParseAttestation attest:./snp:FuzzValidate \
	attest:./tdx:FuzzValidate attest:./tdx:FuzzQuoteParse attest:./atls:FuzzReadMsg \
	coordinator:./manifest:FuzzParse \
	webhook:./policy:FuzzDecodeWorkloads webhook:./policy:FuzzGenerate webhook:./policy:FuzzParseInitData \
	webhook:./policy:FuzzCacheKey webhook:./internal/server:FuzzPatchCacheKey \
	webhook:./internal/server:FuzzAdmissionReview initializer:./meshconfig:FuzzParse \
	initializer:./internal/rules:FuzzCompute \
	initializer:./initenv:FuzzParse initializer:./pv:FuzzParse initializer:./pv:FuzzParseHeaderIntegrity \
	initializer:./meshconfig:FuzzParseProbes attest:./sim:FuzzInitDataDigest
FUZZTIME ?= 60s
# Minimising a large new input (e.g. a whole manifest) may otherwise take the
# fuzzer's default 60 s, which stalls a 60 s run at a few hundred executions.
FUZZMINIMIZETIME ?= 5s

.PHONY: fuzz
fuzz: go.work ## Run every fuzz target for FUZZTIME (default 60s) each; `go test` runs their seed corpora in `make test`.
	@for t in $(FUZZ_TARGETS); do IFS=: read -r m p f <<<"$$t"; echo ">> fuzz $$m $$p $$f ($(FUZZTIME))"; \
		(cd $$m && go test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $$p); done

##@ Checks

.PHONY: check
check: workspace-check imports-check tidy-check generate-check lint ## All static checks.

.PHONY: workspace-check
workspace-check: ## Fail when go.work differs from what `make workspace` generates.
	@tmp=$$(mktemp); hack/workspace.sh "$$tmp"; \
		if ! diff -u go.work "$$tmp"; then rm -f "$$tmp"; echo "go.work is stale: run 'make workspace'"; exit 1; fi; rm -f "$$tmp"

.PHONY: imports-check
imports-check: go.work ## Fail on an import against the module dependency direction of DESIGN.md §2.
	@hack/check-imports.sh

.PHONY: lint
lint: go.work $(GOLANGCI_LINT) ## Run golangci-lint on every module.
	@for m in $(MODULES); do echo ">> golangci-lint $$m"; (cd $$m && $(GOLANGCI_LINT) run --allow-parallel-runners --config $(ROOT)/.golangci.yml ./...); done

.PHONY: fix-lint
fix-lint: go.work $(GOLANGCI_LINT) ## Run golangci-lint with --fix on every module.
	@for m in $(MODULES); do (cd $$m && $(GOLANGCI_LINT) run --config $(ROOT)/.golangci.yml --fix ./...); done

.PHONY: tidy
tidy: ## go mod tidy in every module and tool module.
	@for m in $(MODULES); do (cd $$m && GOWORK=off GOFLAGS=-mod=mod go mod tidy); done
	@for m in $(TOOL_MODULES); do (cd $$m && GOWORK=off go mod tidy); done

.PHONY: tidy-check
tidy-check: ## Fail when any go.mod/go.sum is not tidy.
	@hack/tidy-check.sh $(MODULES) $(TOOL_MODULES)

.PHONY: generate
generate: $(BUF) $(PROTOC_GEN_GO) $(PROTOC_GEN_GO_GRPC) ## Generate protobuf and gRPC code (buf, pinned plugins).
	@hack/generate.sh $(TOOLS_BIN)

.PHONY: generate-check
generate-check: $(BUF) $(PROTOC_GEN_GO) $(PROTOC_GEN_GO_GRPC) ## Fail when generated code differs from the checked-in code.
	@hack/generate.sh $(TOOLS_BIN) --check

##@ Clean

.PHONY: clean
clean: ## Remove bin/ (the Go build cache keeps rebuilds short).
	rm -rf $(BIN)
