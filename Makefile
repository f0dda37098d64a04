# Everything a fresh machine needs, in two commands:
#   make demo    grasp demo in simulation (sets everything up first)
#   make test    lint + whole test suite (make test PYTEST_ARGS="test/core -x")
# Set-up steps are file targets, so a second run with nothing changed skips them.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PYTEST_ARGS ?=
DEPS_STAMP := $(VENV)/.deps-installed
INTERFACES := $(VENV)/lib/dexwm_ros_interfaces/dexwm_ros/msg/__init__.py
SYSTEM_STAMP := build/.system-deps

export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: setup demo test lint clean

setup: $(SYSTEM_STAMP) $(DEPS_STAMP) $(INTERFACES)

# Headless OpenGL for MuJoCo rendering (Debian packages), when missing and we may install.
$(SYSTEM_STAMP):
	@tools/install_system_deps.sh
	@mkdir -p build && touch $@

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel

# constraints.txt pins the CPU torch build and applies to every install.
$(DEPS_STAMP): $(VENV)/bin/python setup.py constraints.txt
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[sim,training,dwm,ros,ros-build,dev]" \
		--config-settings editable_mode=compat
	touch $@

$(INTERFACES): $(DEPS_STAMP) CMakeLists.txt package.xml $(wildcard msg/*.msg srv/*.srv action/*.action)
	tools/build_interfaces.sh $(VENV)
	touch $@

lint: $(DEPS_STAMP)
	$(VENV)/bin/ruff check .

test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)

# The paper's CEM budget (512 samples x 10 iterations) takes minutes per step on 2 CPU cores;
# the demo plans with a smaller one so that it finishes in a few minutes.
DEMO_SETTINGS := --set cem_planner.num_samples=64 --set cem_planner.num_elites=8 \
	--set cem_planner.iterations=4 --set task_runner.max_mpc_steps=5

demo: setup
	$(VENV)/bin/dexwm-launch grasp --demo $(DEMO_SETTINGS)

clean:
	rm -rf build $(VENV)
