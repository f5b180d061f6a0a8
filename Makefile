# `make demo` and `make test` work on a fresh Debian machine: each installs what is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEB_PACKAGES := postgresql prometheus prometheus-alertmanager prometheus-pushgateway chromium openjdk-17-jre-headless
PYTEST_ARGS ?=

.PHONY: demo test test-unit venv deb bench build golden previews spark lint clean

$(BIN)/monitor: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/monitor

deb:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		for s in prometheus prometheus-alertmanager prometheus-pushgateway postgresql; do $$SUDO service $$s stop >/dev/null 2>&1 || true; done; \
	fi

demo: venv
	$(BIN)/monitor demo

test: venv deb
	$(BIN)/python -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS)

# the fast tier: pure logic on SQLite, in process (tests/conftest.py fails an unmarked test that starts a process)
test-unit: venv
	$(BIN)/python -m pytest -q -m "not postgres and not stack and not browser and not slow" $(PYTEST_ARGS)

build: venv
	$(BIN)/monitor build

bench: venv deb
	$(BIN)/python benchmarks/bench_models.py --rows 1000000
	$(BIN)/python benchmarks/bench_app.py
	$(BIN)/python benchmarks/bench_service.py
	$(BIN)/python benchmarks/bench_faults.py

# rewrite tests/golden/out-*/ from the current code (after an intended change of an output)
golden: venv
	cd tests && ../$(BIN)/python -m golden --update

# the only writer of docs/*.png: the dashboards drawn from their own queries, then the app's pages in chromium
previews: venv deb
	$(BIN)/python tools/previews.py --out docs/
	MONITOR_SCREENSHOTS=$(CURDIR)/docs $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_app_browser.py

# a local Spark cluster on loopback (master, two workers, Spark Connect) until Ctrl-C: its sc:// URL is printed
spark: venv deb
	cd tests && ../$(BIN)/python spark.py

lint: venv
	$(BIN)/ruff check monitor app_streamlit tests benchmarks tools

clean:
	rm -rf $(VENV) monitor-demo .pytest_cache
