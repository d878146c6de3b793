# Headless Chromium for the dashboard test (tests/integration/test_dashboard.py).
# Include this file from the top-level Makefile:
#
#   include make/chromium.mk
#
# It adds `chromium` to the prerequisites of `test`. The target installs Debian's
# chromium package with apt-get (through sudo unless make runs as root) and does
# nothing when a `chromium` command is already on PATH.

.PHONY: chromium

chromium: ## Install Debian's chromium package for the dashboard test, unless chromium is on PATH
	@if command -v chromium >/dev/null 2>&1; then \
		echo "chromium: $$(command -v chromium)"; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "chromium is not on PATH and apt-get is missing; install Chromium with your package manager" >&2; \
		exit 1; \
	else \
		sudo=""; \
		if [ "$$(id -u)" -ne 0 ]; then sudo=sudo; fi; \
		echo "Installing Debian's chromium package for the dashboard test"; \
		$$sudo apt-get update && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	fi

test: chromium
