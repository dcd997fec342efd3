# Two commands on a fresh machine with only Python and the package registries:
#   make run    install into .venv and serve on 127.0.0.1:8080 (gunicorn)
#   make test   install what the tests need (.venv, the sekmet-fhir FHIR server in .venv-fhir) and run them all
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FHIR_VENV := .venv-fhir
SEKMET_VERSION := 0.1.1
HOST ?= 127.0.0.1
PORT ?= 8080
WORKERS ?= 2
PYTEST_ARGS ?=

.PHONY: install run run-sandbox test test-fast fhir-server browser nginx samples valuesets bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

install: $(BIN)/.installed

# the FHIR server the end-to-end tests start: pinned, in its own virtual environment
$(FHIR_VENV)/.installed-$(SEKMET_VERSION):
	test -x $(FHIR_VENV)/bin/python || $(PYTHON) -m venv $(FHIR_VENV)
	$(FHIR_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'sekmet-fhir==$(SEKMET_VERSION)'
	touch $@

fhir-server: $(FHIR_VENV)/.installed-$(SEKMET_VERSION)

# Debian's Chromium and its driver for the browser test of the card console: installed with apt when
# missing and this runs as root (as on CI); elsewhere the browser test is skipped and says so
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium and chromium-driver for the browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "chromium not installed and not root: the browser test will be skipped"; fi

# Debian's nginx for the test of two replicas behind a reverse proxy (tests/e2e/test_replicas.py): only
# the binary /usr/sbin/nginx is used (the test starts its own nginx with its own configuration), so the
# package is installed with the system service kept from starting (policy-rc.d) and stopped if it runs
nginx:
	@if [ -x /usr/sbin/nginx ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's nginx for the replica test (the system service is not started)"; \
	  rc=/usr/sbin/policy-rc.d; log=$$(mktemp); [ ! -e $$rc ] || mv $$rc $$rc.cds-make; \
	  printf '#!/bin/sh\nexit 101\n' > $$rc && chmod 755 $$rc; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx; } >$$log 2>&1; st=$$?; \
	  rm -f $$rc; [ ! -e $$rc.cds-make ] || mv $$rc.cds-make $$rc; \
	  [ $$st = 0 ] || cat $$log >&2; rm -f $$log; \
	  if [ -f /run/nginx.pid ]; then kill "$$(cat /run/nginx.pid)" 2>/dev/null || true; fi; \
	  exit $$st; \
	else echo "nginx not installed and not root: the replica test will be skipped"; fi

# development: authentication off (a warning is logged at start), any fhirServer, any browser origin.
# Production runs `cds-service serve` with the settings in the README (authentication on by default).
DEV_ENV := CDS_AUTH_DISABLED=true CDS_FHIR_SERVER_ALLOWLIST='*' CDS_ALLOW_HTTP_FHIR=true CDS_CORS_ORIGINS='*' \
	CDS_CONSOLE=true CDS_LOG_FORMAT=text CDS_CORS_PRIVATE_NETWORK=true
# `exec` hands the recipe's shell over to the server, so the server is make's own child: Ctrl-C stops
# it, and so does `kill` of make's process id (make passes SIGTERM on to its child)
run: install
	exec env $(DEV_ENV) $(BIN)/cds-service serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

# for the CDS Hooks sandbox in a browser: authentication on, trusting the sandbox's (public) key.
# The hosted sandbox (https://sandbox.cds-hooks.org) and one served locally by its own README
# (http://localhost:8080) may both call it; it listens on 8090 so that a local sandbox keeps 8080.
SANDBOX_PORT ?= 8090
SANDBOX_ORIGINS ?= https://sandbox.cds-hooks.org,http://localhost:8080,http://127.0.0.1:8080
run-sandbox: install
	exec env CDS_SANDBOX_ISSUER=true CDS_PUBLIC_BASE_URL=http://127.0.0.1:$(SANDBOX_PORT) CDS_FHIR_SERVER_ALLOWLIST='*' CDS_CORS_ORIGINS='$(SANDBOX_ORIGINS)' \
	CDS_CORS_PRIVATE_NETWORK=true CDS_LOG_FORMAT=text \
	$(BIN)/cds-service serve --host $(HOST) --port $(SANDBOX_PORT) --workers $(WORKERS)

test: install fhir-server browser nginx
	CDS_TEST_SEKMET=$(CURDIR)/$(FHIR_VENV)/bin/sekmet $(BIN)/python -m pytest $(PYTEST_ARGS)

# every test but those marked e2e (the ones against the sekmet-fhir FHIR server, headless Chromium and
# the fresh-clone quick start); some of the rest still start the service as a process
test-fast: install
	$(BIN)/python -m pytest -m 'not e2e' $(PYTEST_ARGS)

samples: install
	$(BIN)/python -m fhir_samples.scenarios
	$(BIN)/python -m fhir_samples.therapy

# rebuild the packaged value sets (cds_service/knowledge/valuesets/) from terminology/sources/ by the
# recipe terminology/concepts.yaml; see terminology/README.md
valuesets: install
	$(BIN)/python terminology/build_valuesets.py

clean:
	rm -rf $(VENV) $(FHIR_VENV) .pytest_cache

# the five benchmarks of the README, each printed as a ratio against a baseline of the same run
bench: install
	cd benchmarks && ../$(BIN)/python bench_typical_chart.py
	cd benchmarks && ../$(BIN)/python bench_long_history.py
	cd benchmarks && ../$(BIN)/python bench_throughput.py
	cd benchmarks && ../$(BIN)/python bench_fetching.py
	cd benchmarks && ../$(BIN)/python bench_memory.py
