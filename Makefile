# xcatfab: `make demo` and `make test` are the whole quick start.
#
# `make` creates .venv, installs xcatfab and the test tools into it, and (as
# root) installs the Debian packages the lab needs when they are missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Both labs: the netns lab's packages, and QEMU and friends for the VM lab.
LAB_PACKAGES := $(shell cat tests/lab/apt-packages.txt tests/labkit/vm/apt-packages.txt 2>/dev/null | sed 's/\#.*//')
LAB_STATE ?= /var/lib/xcatfab-lab
PYTEST_ARGS ?=

.PHONY: all venv bytecode lab-deps test test-vm unit demo bench bench-quick lint clean lab-down

all: venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# Debian packages for the lab (sshd, dockerd, debootstrap ...), installed only
# when one is missing, so a prepared machine makes no apt call at all.
lab-deps:
	@missing=""; for p in $(LAB_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" != 0 ]; then echo "lab needs (as root): apt-get install$$missing"; exit 0; fi; \
	    echo "installing lab packages:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

# xcatfab's own modules byte-compiled up front: with PYTHONDONTWRITEBYTECODE set (some CI and
# container environments set it) every `fab` the tests run would compile them from source
# again, about 0.2 s of CPU each time (a wheel install compiles them when installed).
bytecode: venv
	$(BIN)/python -m compileall -q tasks fabfile.py

unit: venv bytecode
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test: venv bytecode lab-deps
	$(BIN)/pytest $(PYTEST_ARGS)

# The VM tier alone (issue 14's scenarios on QEMU VMs; make test runs it too).
test-vm: venv bytecode lab-deps
	$(BIN)/pytest tests/vmlab $(PYTEST_ARGS)

demo: venv lab-deps
	$(BIN)/inv lab.up --hosts 1
	$(BIN)/fab -H lab1 deploy --inventory $(LAB_STATE)/hosts.ini
	@echo
	@echo "xCAT runs in container xcatmn on lab host lab1, at its static address 198.18.0.111 (xcatd on 3001)."
	@echo "  $(BIN)/fab -H lab1 xcat --inventory $(LAB_STATE)/hosts.ini -- lsdef compute1"
	@echo "  $(BIN)/fab -H lab1 status --inventory $(LAB_STATE)/hosts.ini"
	@echo "  ssh -F $(LAB_STATE)/ssh_config lab1 docker ps"
	@echo "  $(BIN)/inv lab.down        # when done"

# Every benchmark (issue 15: converge at N = 1, 4, 8, 16, scale, ISO staging): about an hour;
# BENCHMARKS.md rewritten. Share the lab: flock /run/xcatfab-lab.lock make bench
bench: venv lab-deps
	$(BIN)/python bench/run.py

# Five minutes: N = 1 and 4, 3 runs, the floor, xcatfab (quick and deep) and pyinfra; JSON only.
bench-quick: venv lab-deps
	$(BIN)/python bench/run.py --quick

lint: venv
	$(BIN)/ruff check tasks tests bench fabfile.py

lab-down: venv
	$(BIN)/inv lab.down

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
