# Go programs the tests and the demo trace: every folder of test/programs/ with
# a go.mod, found by test/programs/programs.ts (its program.conf, if any, says
# which toolchains and variants; see there), built per toolchain and variant:
# build/go/<toolchain>/<variant>/<name>. Programs the tests build themselves
# (built-by = tests) are left to them. The demo needs only the machine's Go,
# and only demo-service and shop (`demo-programs`, `demo-data-programs`).
PROGRAMS_DIR := $(ROOT)/test/programs
GO_OUT := $(BUILD)/go
PROGRAMS_TS := $(ROOT)/test/programs/programs.ts
GO126 := $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
GO119 := /usr/lib/go-1.19/bin/go

# How each toolchain is run (the machine's Go never fetches another one).
go_go1.19 := $(GO119)
go_go1.26 := $(GO126)
go_go1.27 := $(GO126)
env_go1.26 := GOTOOLCHAIN=local
env_go1.27 := GOTOOLCHAIN=go1.27.3

define go_build
$(GO_OUT)/$(1)/$(2)/$(3): $(shell find $(PROGRAMS_DIR)/$(3) -type f)
	@mkdir -p $$(dir $$@)
	@echo "[setup] building test program $(3) ($(1), $(2))"
	cd $(PROGRAMS_DIR)/$(3) && $(4) CGO_ENABLED=0 $(5) build -trimpath $(6) -o $$@ .
endef

flags_plain :=
flags_stripped := -ldflags=-s\ -w
flags_pie := -buildmode=pie

# The list of programs, regenerated when a folder, a go.mod or a program.conf
# comes or goes (the directory's own time changes with its entries).
PROGRAMS_FRAGMENT := $(GO_OUT)/programs.mk
$(PROGRAMS_FRAGMENT): $(PROGRAMS_DIR) $(PROGRAMS_TS) $(wildcard $(PROGRAMS_DIR)/*/go.mod $(PROGRAMS_DIR)/*/program.conf $(PROGRAMS_DIR)/*/)
	@mkdir -p $(dir $@)
	@$(NODE) $(PROGRAMS_TS) --make $(PROGRAMS_DIR) > $@.tmp && mv $@.tmp $@
-include $(PROGRAMS_FRAGMENT)

$(foreach p,$(SETUP_PROGRAMS),$(foreach t,$(toolchains_$(p)),$(foreach v,$(variants_$(p)),\
  $(eval $(call go_build,$(t),$(v),$(p),$(env_$(t)),$(go_$(t)),$(flags_$(v)))))))

.PHONY: program-notes setup-programs demo-programs demo-data-programs testprogs
# the demo's first system (also in images); its second one (`npm run demo` only)
demo-programs: $(GO_OUT)/go1.26/plain/demo-service
demo-data-programs: $(GO_OUT)/go1.26/plain/shop
setup-programs: program-notes \
	$(foreach p,$(SETUP_PROGRAMS),$(foreach t,$(toolchains_$(p)),$(foreach v,$(variants_$(p)),$(GO_OUT)/$(t)/$(v)/$(p))))
testprogs: demo-programs setup-programs
