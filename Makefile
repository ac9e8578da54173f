# Quick start: `make run` serves repo-example/ on https://127.0.0.1:6789;
# `make test` runs the test suite. Both create .venv on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN := .run
STAMP := $(VENV)/.installed

.PHONY: run test bench bench-live bench-load bench-tools bench-hostile bench-packages bench-fleet bench-web lint install clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

$(RUN)/server.crt: $(STAMP)
	mkdir -p $(RUN)
	$(BIN)/python -m bcfg2.devcert $(RUN)/server.crt $(RUN)/server.key

# the plugins repo-example uses (tests/conftest.py PLUGINS loads the same list)
EXAMPLE_PLUGINS := Metadata,Bundler,Cfg,Rules,Defaults,Probes,Properties,TemplateHelper,GroupPatterns,Decisions,Reporting,Packages

run: $(STAMP) $(RUN)/server.crt
	$(BIN)/bcfg2-server -C /dev/null -v --backend builtin \
		-Q repo-example --plugins $(EXAMPLE_PLUGINS) \
		--state-dir $(RUN)/state \
		-S https://127.0.0.1:6789 \
		--ssl-cert $(RUN)/server.crt --ssl-key $(RUN)/server.key \
		-x bcfg2-example --admin-user admin --admin-password bcfg2-admin \
		--probes-allowed-groups virtual $(if $(WEB),--web-listen $(WEB))

test: $(STAMP)
	$(BIN)/python -m pytest -q

# the benchmarks (reports, not tests): `make bench` runs all seven, bench-live, bench-load,
# bench-tools (bcfg2-info buildall and bcfg2-test on 1,000 clients), bench-hostile (agent runs
# under attack), bench-packages (Packages on a Debian-main sized index) and bench-fleet (1-3
# servers on PostgreSQL behind HAProxy) and bench-web (the web page over 10,000 clients) one each.
# BENCH_LIVE_ARGS, BENCH_LOAD_ARGS, BENCH_TOOLS_ARGS, BENCH_HOSTILE_ARGS, BENCH_PACKAGES_ARGS,
# BENCH_FLEET_ARGS and BENCH_WEB_ARGS go to one benchmark each; BENCH_ARGS (kept for compatibility) goes to the live-repository
# benchmark, e.g.
#   make bench-live BENCH_LIVE_ARGS="--idle-seconds 5"   make bench-load BENCH_LOAD_ARGS=--quick
#   make bench-hostile BENCH_HOSTILE_ARGS="--quick --cores builtin"
BENCH_LIVE_ARGS ?= $(BENCH_ARGS)
BENCH_LOAD_ARGS ?=
BENCH_TOOLS_ARGS ?=
BENCH_HOSTILE_ARGS ?=
BENCH_PACKAGES_ARGS ?=
BENCH_FLEET_ARGS ?=
BENCH_WEB_ARGS ?=

bench: $(STAMP)
	$(BIN)/python tests/bench/live_repository.py $(BENCH_LIVE_ARGS)
	$(BIN)/python tests/bench/load.py $(BENCH_LOAD_ARGS)
	$(BIN)/python tests/bench/tools.py $(BENCH_TOOLS_ARGS)
	$(BIN)/python tests/bench/hostile.py $(BENCH_HOSTILE_ARGS)
	$(BIN)/python tests/bench/packages.py $(BENCH_PACKAGES_ARGS)
	$(BIN)/python tests/bench/fleet.py $(BENCH_FLEET_ARGS)
	$(BIN)/python tests/bench/web.py $(BENCH_WEB_ARGS)

bench-live: $(STAMP)
	$(BIN)/python tests/bench/live_repository.py $(BENCH_LIVE_ARGS)

bench-load: $(STAMP)
	$(BIN)/python tests/bench/load.py $(BENCH_LOAD_ARGS)

bench-tools: $(STAMP)
	$(BIN)/python tests/bench/tools.py $(BENCH_TOOLS_ARGS)

bench-hostile: $(STAMP)
	$(BIN)/python tests/bench/hostile.py $(BENCH_HOSTILE_ARGS)

bench-packages: $(STAMP)
	$(BIN)/python tests/bench/packages.py $(BENCH_PACKAGES_ARGS)

bench-fleet: $(STAMP)
	$(BIN)/python tests/bench/fleet.py $(BENCH_FLEET_ARGS)

bench-web: $(STAMP)
	$(BIN)/python tests/bench/web.py $(BENCH_WEB_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(RUN) build dist *.egg-info
