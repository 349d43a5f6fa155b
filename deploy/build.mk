# Builds what set-up produces from sources in the tree. Called by deploy/setup.sh.
# Every target depends on its sources, so a second run with nothing changed is a no-op.
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))/..)
NODE ?= $(ROOT)/deploy/node
NODE_BIN := $(shell $(NODE) -p process.execPath)
NODEDIR := $(abspath $(dir $(NODE_BIN))/..)
BUILD := $(ROOT)/build

.PHONY: all native probes bundle compile-cache testprogs demo-programs collector image
# SKIP_TESTS=1: no test program or tool (images, hosts); DEMO=1: and the demo's second system (npm run demo)
all: native probes bundle compile-cache demo-programs $(if $(DEMO),demo-data-programs,) $(if $(SKIP_TESTS),,testprogs collector deploy-tools)

# --- native addon (node-addon-api over the system libbpf) --------------------
NATIVE_SRC := $(wildcard $(ROOT)/daemon/native/src/*.cc $(ROOT)/daemon/native/src/*.c $(ROOT)/daemon/native/src/*.h) $(ROOT)/daemon/native/binding.gyp
NATIVE_OUT := $(ROOT)/daemon/native/build/Release/gotrail_native.node
native: $(if $(wildcard $(ROOT)/daemon/native/binding.gyp),$(NATIVE_OUT),)
$(NATIVE_OUT): $(NATIVE_SRC)
	@echo "[setup] building the native addon"
	cd $(ROOT)/daemon/native && $(NODE) $(ROOT)/node_modules/node-gyp/bin/node-gyp.js rebuild --nodedir=$(NODEDIR) --loglevel=warn
	@touch $@

# --- the agent's bundle (deploy/bundle.ts), run by daemon/bin/gotrail ---------
# Each dependency once, only the exports used: ~5-7 MiB less resident memory
# than the sources' ~290 modules. The launcher runs the sources instead while
# one of them is newer than the bundle.
BUNDLE := $(BUILD)/agent/main.mjs
bundle: $(BUNDLE)
$(BUNDLE): $(shell find $(ROOT)/daemon -name '*.ts' -not -path '*/node_modules/*') $(ROOT)/deploy/bundle.ts $(ROOT)/package-lock.json
	@echo "[setup] bundling the agent (build/agent)"
	@$(NODE) $(ROOT)/deploy/bundle.ts $(BUILD)/agent

# --- Node's compile cache of the agent (daemon/bin/gotrail) -------------------
# Holds the agent's modules with their types stripped, so that the running
# agent need not load Node's TypeScript compiler (~30 MiB resident). Each
# command loads its modules when run, so each is run once (with --help).
COMPILE_CACHE := $(BUILD)/compile-cache/.warm
compile-cache: $(COMPILE_CACHE)
# Warmed for the bundle (what the launcher runs) and for the sources.
$(COMPILE_CACHE): $(shell find $(ROOT)/daemon -name '*.ts' -not -path '*/node_modules/*') $(NATIVE_OUT) $(BUNDLE)
	@echo "[setup] warming Node's compile cache of the agent"
	@mkdir -p $(dir $@)
	@for c in run inspect demo; do NODE_COMPILE_CACHE=$(BUILD)/compile-cache $(ROOT)/daemon/bin/gotrail $$c --help >/dev/null || exit 1; done
	@for c in run inspect demo; do NODE_COMPILE_CACHE=$(BUILD)/compile-cache $(NODE) $(ROOT)/daemon/cli/main.ts $$c --help >/dev/null || exit 1; done
	@touch $@

-include $(ROOT)/probes/probes.mk
-include $(ROOT)/test/programs/programs.mk
-include $(ROOT)/test/collector/collector.mk
-include $(ROOT)/deploy/tools/tools.mk

# --- the container image without a container engine (deploy/image/build.sh) -
# Not part of `all`: the image test (test/deploy/image.e2e.test.ts) builds it.
IMAGE_OUT := $(BUILD)/image/oci/index.json
IMAGE_SRC := $(ROOT)/deploy/image/build.sh $(ROOT)/deploy/stage.sh $(ROOT)/package-lock.json \
	$(shell find $(ROOT)/daemon -name '*.ts' -not -path '*/node_modules/*') $(wildcard $(ROOT)/offsets-db/*.json) $(BPF_OBJ) $(NATIVE_OUT)
image: $(IMAGE_OUT)
$(IMAGE_OUT): $(IMAGE_SRC)
	bash $(ROOT)/deploy/image/build.sh
