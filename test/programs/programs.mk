# Go programs the tests and the demo trace, built once per Go toolchain here
# and variant (plain, stripped, pie): build/go/<toolchain>/<variant>/<name>.
# The demo needs only the machine's Go.
PROGRAMS_DIR := $(ROOT)/test/programs
GO_OUT := $(BUILD)/go
GO126 := $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
GO119 := /usr/lib/go-1.19/bin/go
E2E_PROGRAMS := httpserver demo-service

define go_build
$(GO_OUT)/$(1)/$(2)/$(3): $(wildcard $(PROGRAMS_DIR)/$(3)/*.go $(PROGRAMS_DIR)/$(3)/go.mod)
	@mkdir -p $$(dir $$@)
	@echo "[setup] building test program $(3) ($(1), $(2))"
	cd $(PROGRAMS_DIR)/$(3) && $(4) CGO_ENABLED=0 $(5) build -trimpath $(6) -o $$@ .
endef

VARIANTS := plain stripped pie
flags_plain :=
flags_stripped := -ldflags=-s\ -w
flags_pie := -buildmode=pie

$(foreach v,$(VARIANTS),$(foreach p,$(E2E_PROGRAMS),$(eval $(call go_build,go1.26,$(v),$(p),,$(GO126),$(flags_$(v))))))
$(foreach v,$(VARIANTS),$(eval $(call go_build,go1.19,$(v),httpserver,,$(GO119),$(flags_$(v)))))
$(foreach v,$(VARIANTS),$(eval $(call go_build,go1.27,$(v),httpserver,GOTOOLCHAIN=go1.27.3,$(GO126),$(flags_$(v)))))

demo-programs: $(GO_OUT)/go1.26/plain/demo-service
testprogs: demo-programs \
	$(foreach t,go1.19 go1.26 go1.27,$(foreach v,$(VARIANTS),$(GO_OUT)/$(t)/$(v)/httpserver))
