# Everything a fresh machine needs, in two commands:
#   make demo    grasp demo in simulation with the default world model (sets everything up)
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

.PHONY: setup demo test lint clean default-model palm-encoder

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

# The grasp task with the packaged default world model at the paper's CEM budget
# (512 samples x 10 iterations, horizon 3); task_runner prints whether the episode succeeded.
demo: setup
	$(VENV)/bin/dexwm-launch grasp

# Rebuild models/default_world_model from scratch on this machine (about 2 hours on 2
# cores; every step resumes where it stopped): exploration data, latent cache + teacher-forced
# pre-training, multistep fine-tuning, keypoint-depth fine-tuning, keypoint-head fine-tuning
# with the hand at objects, open-loop evaluation, then the checkpoint is copied into models/.
# See models/default_world_model/README.md.
DEFAULT_MODEL_RUN := runs/default_model_head
default-model: setup
	$(VENV)/bin/dexwm-explore --out data/default_model/train --episodes 300 --steps 60 --seed 0
	$(VENV)/bin/dexwm-explore --out data/default_model/jitter --episodes 150 --steps 60 \
		--seed 200000 --mode jittered_targets
	$(VENV)/bin/dexwm-explore --out data/default_model/heldout --episodes 24 --steps 60 \
		--seed 100000
	$(VENV)/bin/dexwm-explore --out data/default_model/approach --episodes 200 --steps 40 \
		--seed 300000 --mode object_approach
	$(VENV)/bin/dexwm-train --config config/train_default.yaml
	$(VENV)/bin/dexwm-train --config config/finetune_default.yaml
	$(VENV)/bin/dexwm-train --config config/finetune_depth_default.yaml
	$(VENV)/bin/dexwm-train --config config/finetune_head_default.yaml
	$(VENV)/bin/dexwm-eval --model $(DEFAULT_MODEL_RUN)/model \
		--config config/finetune_head_default.yaml
	mkdir -p models/default_world_model
	cp $(DEFAULT_MODEL_RUN)/model/model.safetensors $(DEFAULT_MODEL_RUN)/model/config.json \
		$(DEFAULT_MODEL_RUN)/eval/open_loop.json models/default_world_model/

# Encoder candidate: MediaPipe's palm detector, which the mediapipe 0.10.x wheel ships as a
# .tflite file, converted once to safetensors (tools/convert_tflite_backbone.py; the one download
# is the wheel from the package index). Use it with encoder backend "blazepalm" and
# weights models/encoders/blazepalm.
PALM_ENCODER := models/encoders/blazepalm
palm-encoder: $(PALM_ENCODER)/graph.json
$(PALM_ENCODER)/graph.json: $(DEPS_STAMP) tools/convert_tflite_backbone.py
	$(PY) tools/convert_tflite_backbone.py --out $(PALM_ENCODER)

clean:
	rm -rf build $(VENV)
