# Quick start: `make run` serves repo-example/ on https://127.0.0.1:6789;
# `make test` runs the test suite. Both create .venv on first use.
# `make test-all` runs the suite on every Python requires-python claims: the default one in
# .venv, and 3.12 and 3.13 in .venv-3.12 and .venv-3.13 (`make test-3.12 TESTS=tests/unit`
# runs some of it on one).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN := .run
STAMP := $(VENV)/.installed
# the Pythons besides the default one that the suite runs on (each in .venv-X.Y)
OTHER_PYTHONS := 3.12 3.13
PYENV_ROOT ?= $(HOME)/.pyenv
# the interpreter of Python X.Y: pyenv's newest X.Y.* if there is one, else pythonX.Y on PATH
python_of = $(or $(lastword $(sort $(wildcard $(PYENV_ROOT)/versions/$(1).*/bin/python$(1)))),python$(1))
# what test-X.Y runs (empty: the whole suite)
TESTS ?=

.PHONY: run test test-all $(OTHER_PYTHONS:%=test-%) bench bench-build bench-live bench-load bench-tools bench-hostile bench-packages bench-fleet bench-agent bench-scale bench-web lint install clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

$(OTHER_PYTHONS:%=.venv-%/.installed): .venv-%/.installed: pyproject.toml
	@$(call python_of,$*) -c 'import sys; sys.exit(0 if sys.version_info[:2] == tuple(map(int, "$*".split("."))) else "$(call python_of,$*) is not Python $*")'
	test -x .venv-$*/bin/python || $(call python_of,$*) -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet --upgrade pip
	.venv-$*/bin/python -m pip install --quiet -e '.[test]'
	touch $@

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

# the suite in TEST_JOBS processes (pytest-xdist; a module's tests stay in one), one per CPU
TEST_JOBS ?= auto
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile

$(OTHER_PYTHONS:%=test-%): test-%: .venv-%/.installed
	.venv-$*/bin/python -m pytest -q $(TESTS)

test-all: test $(OTHER_PYTHONS:%=test-%)

# the benchmarks (reports, not tests): `make bench` runs all ten, bench-build (cold builds
# in-process: CPU per configuration of the load repository), bench-live, bench-load,
# bench-tools (bcfg2-info buildall and bcfg2-test on 1,000 clients), bench-hostile (agent runs
# under attack), bench-packages (Packages on a Debian-main sized index), bench-fleet (1-3
# servers on PostgreSQL behind HAProxy), bench-agent (the agent verifying and writing 2,000
# files), bench-scale (start-up, RSS and build time as clients, entries per configuration
# and repository files grow; PNG plots with `pip install .[plot]`) and bench-web (the web
# page over 10,000 clients and 30 days of runs) one each.
# BENCH_BUILD_ARGS, BENCH_LIVE_ARGS, BENCH_LOAD_ARGS, BENCH_TOOLS_ARGS, BENCH_HOSTILE_ARGS,
# BENCH_PACKAGES_ARGS, BENCH_FLEET_ARGS, BENCH_AGENT_ARGS, BENCH_SCALE_ARGS and BENCH_WEB_ARGS
# go to one benchmark each; BENCH_ARGS (kept for compatibility) goes to the live-repository
# benchmark, e.g.
#   make bench-live BENCH_LIVE_ARGS="--idle-seconds 5"   make bench-load BENCH_LOAD_ARGS=--quick
#   make bench-hostile BENCH_HOSTILE_ARGS="--quick --cores builtin"
#   make bench-scale BENCH_SCALE_ARGS="--quick --json .run/scale.json"
BENCH_BUILD_ARGS ?=
BENCH_LIVE_ARGS ?= $(BENCH_ARGS)
BENCH_LOAD_ARGS ?=
BENCH_TOOLS_ARGS ?=
BENCH_HOSTILE_ARGS ?=
BENCH_PACKAGES_ARGS ?=
BENCH_FLEET_ARGS ?=
BENCH_AGENT_ARGS ?=
BENCH_SCALE_ARGS ?=
BENCH_WEB_ARGS ?=

bench: $(STAMP)
	$(BIN)/python tests/bench/build.py $(BENCH_BUILD_ARGS)
	$(BIN)/python tests/bench/live_repository.py $(BENCH_LIVE_ARGS)
	$(BIN)/python tests/bench/load.py $(BENCH_LOAD_ARGS)
	$(BIN)/python tests/bench/tools.py $(BENCH_TOOLS_ARGS)
	$(BIN)/python tests/bench/hostile.py $(BENCH_HOSTILE_ARGS)
	$(BIN)/python tests/bench/packages.py $(BENCH_PACKAGES_ARGS)
	$(BIN)/python tests/bench/fleet.py $(BENCH_FLEET_ARGS)
	$(BIN)/python tests/bench/agent.py $(BENCH_AGENT_ARGS)
	$(BIN)/python tests/bench/scale.py $(BENCH_SCALE_ARGS)
	$(BIN)/python tests/bench/web.py $(BENCH_WEB_ARGS)

bench-build: $(STAMP)
	$(BIN)/python tests/bench/build.py $(BENCH_BUILD_ARGS)

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

bench-agent: $(STAMP)
	$(BIN)/python tests/bench/agent.py $(BENCH_AGENT_ARGS)

bench-scale: $(STAMP)
	$(BIN)/python tests/bench/scale.py $(BENCH_SCALE_ARGS)

bench-web: $(STAMP)
	$(BIN)/python tests/bench/web.py $(BENCH_WEB_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(RUN) build dist *.egg-info $(OTHER_PYTHONS:%=.venv-%)
