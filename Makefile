# Two entry points for a fresh machine: `make demo` and `make test`.
# Both install what they need (system packages, a virtual environment) and are idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SYS_PKGS := libsndfile1 sox espeak-ng flite festival festvox-kallpc16k festvox-us-slt-hts
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test setup system-deps clean

demo: setup
	$(PY) -m unified_lm.cli demo $(DEMO_ARGS)

test: setup
	$(PY) -m pytest -q tests

setup: system-deps $(VENV)/.installed

# Installs only what is missing, so a warm machine pays nothing.
system-deps:
	@missing=""; for p in $(SYS_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	@touch $@

clean:
	rm -rf $(VENV) runs build *.egg-info
