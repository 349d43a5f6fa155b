# Validators of the deployment files, for the tests (test/deploy): built from
# the Go module proxy (deploy/tools/go.mod pins them) into build/tools, with
# the schemas they validate against:
#   kubeconform, helm, kustomize    Kubernetes manifests and the Helm chart
#   crdschema                       CRD -> kubeconform schema (PodMonitor)
#   dashboardcheck                  Grafana dashboard JSON (Foundation SDK schema)
#   yaml2json                       rendered manifests as JSON, for assertions
#   schemas/kubernetes/vX-standalone-strict   Kubernetes JSON schemas (from
#                                   the PyPI package kubernetes-validate, made standalone)
#   schemas/crd/monitoring.coreos.com/podmonitor_v1.json   from the
#                                   prometheus-operator module's CRD
# First build: ~3 min (helm and kustomize); then a no-op.
TOOLS_DIR := $(ROOT)/deploy/tools
TOOLS_OUT := $(BUILD)/tools
TOOLS_GO := $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
TOOLS_SRC := $(TOOLS_DIR)/go.mod $(TOOLS_DIR)/go.sum $(wildcard $(TOOLS_DIR)/*/*.go)
TOOLS_BINS := $(addprefix $(TOOLS_OUT)/,kubeconform helm kustomize crdschema dashboardcheck yaml2json)
KUBE_SCHEMA_PKG := kubernetes-validate==1.37.0
KUBE_VERSIONS := 1.30.0 1.36.0
KUBE_SCHEMAS := $(TOOLS_OUT)/schemas/kubernetes/.stamp
PROMETHEUS_OPERATOR := github.com/prometheus-operator/prometheus-operator@v0.85.0
PODMONITOR_SCHEMA := $(TOOLS_OUT)/schemas/crd/monitoring.coreos.com/podmonitor_v1.json

.PHONY: deploy-tools
deploy-tools: $(TOOLS_OUT)/.stamp $(KUBE_SCHEMAS) $(PODMONITOR_SCHEMA)

$(TOOLS_OUT)/.stamp: $(TOOLS_SRC) $(TOOLS_DIR)/tools.mk
	@mkdir -p $(TOOLS_OUT)
	@echo "[setup] building the deployment validators (first time: ~3 min)"
	cd $(TOOLS_DIR) && CGO_ENABLED=0 GOTOOLCHAIN=local $(TOOLS_GO) build -trimpath -o $(TOOLS_OUT)/ \
	  github.com/yannh/kubeconform/cmd/kubeconform helm.sh/helm/v3/cmd/helm \
	  sigs.k8s.io/kustomize/kustomize/v5 ./crdschema ./dashboardcheck ./yaml2json
	@touch $@

$(KUBE_SCHEMAS): $(TOOLS_DIR)/tools.mk $(TOOLS_DIR)/k8s-schemas.py
	@echo "[setup] Kubernetes JSON schemas ($(KUBE_SCHEMA_PKG), $(KUBE_VERSIONS))"
	@rm -rf $(dir $@) && mkdir -p $(dir $@)wheel
	python3 -m pip download --quiet --no-deps --dest $(dir $@)wheel $(KUBE_SCHEMA_PKG)
	python3 $(TOOLS_DIR)/k8s-schemas.py $(dir $@)wheel/*.whl $(dir $@) $(KUBE_VERSIONS)
	@rm -rf $(dir $@)wheel
	@touch $@

$(PODMONITOR_SCHEMA): $(TOOLS_OUT)/.stamp
	@echo "[setup] PodMonitor schema from $(PROMETHEUS_OPERATOR)"
	@mkdir -p $(TOOLS_OUT)/schemas/crd
	dir=$$(cd $(TOOLS_OUT) && GOFLAGS=-mod=mod $(TOOLS_GO) mod download -json $(PROMETHEUS_OPERATOR) | sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p') && \
	  $(TOOLS_OUT)/crdschema $(TOOLS_OUT)/schemas/crd $$dir/example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml
