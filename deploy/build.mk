# Builds what set-up produces from sources in the tree. Called by deploy/setup.sh.
# Every target depends on its sources, so a second run with nothing changed is a no-op.
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))/..)
NODE ?= $(ROOT)/deploy/node
NODE_BIN := $(shell $(NODE) -p process.execPath)
NODEDIR := $(abspath $(dir $(NODE_BIN))/..)
BUILD := $(ROOT)/build

.PHONY: all native probes testprogs demo-programs collector
all: native probes demo-programs $(if $(SKIP_TESTS),,testprogs collector)

# --- native addon (node-addon-api over the system libbpf) --------------------
NATIVE_SRC := $(wildcard $(ROOT)/daemon/native/src/*.cc $(ROOT)/daemon/native/src/*.c $(ROOT)/daemon/native/src/*.h) $(ROOT)/daemon/native/binding.gyp
NATIVE_OUT := $(ROOT)/daemon/native/build/Release/gotrail_native.node
native: $(if $(wildcard $(ROOT)/daemon/native/binding.gyp),$(NATIVE_OUT),)
$(NATIVE_OUT): $(NATIVE_SRC)
	@echo "[setup] building the native addon"
	cd $(ROOT)/daemon/native && $(NODE) $(ROOT)/node_modules/node-gyp/bin/node-gyp.js rebuild --nodedir=$(NODEDIR) --loglevel=warn
	@touch $@

-include $(ROOT)/probes/probes.mk
-include $(ROOT)/test/programs/programs.mk
-include $(ROOT)/test/collector/collector.mk
