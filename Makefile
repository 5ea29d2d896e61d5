# The two commands of README. Both set the machine up first (.ci/bootstrap:
# Debian packages, the Python environment, the real binaries built from Go
# modules, all cached under ~/.cache/blackstart) and are quick when it is done.
CACHE ?= $(or $(BLACKSTART_CACHE_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/blackstart)
BIN := $(CACHE)/venv/bin
ARGS ?=

# The local game day needs neither the kind node image nor Chromium; a game day on
# kind (ARGS naming --provider kind) sets up everything.
SETUP := $(if $(findstring kind,$(ARGS)),setup,setup-local)

.PHONY: gameday test setup setup-local fleet screenshot
gameday: $(SETUP)  ## run the game-day suite on the local default and write the reports
	$(BIN)/blackstart gameday $(ARGS)

test: setup  ## lint, type-check and run every test (unit + end-to-end)
	.ci/test $(ARGS)

fleet: $(SETUP)  ## bring up the default local GPU fleet and print its status
	$(BIN)/blackstart cluster up $(ARGS)

screenshot: setup  ## a real game day (coredns-outage) -> docs/report-screenshot.png + README caption
	$(BIN)/python docs/make_screenshot.py $(ARGS)

setup:  ## everything: the local toolchain, the kind node image, Chromium for the browser test
	.ci/bootstrap

setup-local:  ## only what the local provider needs (no engine, node image or Chromium)
	BLACKSTART_KIND_TESTS=0 BLACKSTART_BROWSER_TESTS=0 .ci/bootstrap
