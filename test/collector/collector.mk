# The OpenTelemetry Collector that the end-to-end tests export to: built from
# the Go module proxy (test/collector/go.mod pins the release) into
# build/collector/otelcol. Only rebuilt when its sources change; the first
# build downloads ~120 MB of modules and compiles for a couple of minutes.
COLLECTOR_DIR := $(ROOT)/test/collector
COLLECTOR_BIN := $(BUILD)/collector/otelcol
COLLECTOR_GO := $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
COLLECTOR_SRC := $(wildcard $(COLLECTOR_DIR)/*.go) $(COLLECTOR_DIR)/go.mod $(COLLECTOR_DIR)/go.sum $(COLLECTOR_DIR)/collector.mk

collector: $(COLLECTOR_BIN)

$(COLLECTOR_BIN): $(COLLECTOR_SRC)
	@mkdir -p $(dir $@)
	@echo "[setup] building the OpenTelemetry Collector for the tests (first time: ~2 min)"
	cd $(COLLECTOR_DIR) && CGO_ENABLED=0 $(COLLECTOR_GO) build -trimpath -o $@ .
