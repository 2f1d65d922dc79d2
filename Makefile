# DAMCSeg: the two commands of the README, plus their building blocks.
#   make demo   set up what is missing, then run the demo on the embedded default
#   make test   set up what is missing, then lint and run the whole test suite
# Every step is stamped, so a second run skips what is done.
#
# ROS 2 distro and interpreter (pip-installed ROS wheels, see requirements/ros-<distro>.txt):
#   make test                                      Kilted + python3.11 in .venv/ and install/
#   make test ROS_DISTRO=jazzy PYTHON=python3.12   Jazzy + 3.12 in .venv-jazzy-py3.12/ and
#                                                  install-jazzy-py3.12/ (build/, log/ per tree too)
# Each combination has its own trees, so switching back and forth rebuilds nothing.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

ROS_DISTRO ?= kilted
PYTHON ?= python3.11
DISTROS := $(patsubst requirements/ros-%.txt,%,$(wildcard requirements/ros-*.txt))
ifeq ($(filter $(ROS_DISTRO),$(DISTROS)),)
$(error ROS_DISTRO=$(ROS_DISTRO) ($(origin ROS_DISTRO)) has no requirements/ros-$(ROS_DISTRO).txt; supported: $(DISTROS) (e.g. make test ROS_DISTRO=jazzy PYTHON=python3.12))
endif
# The interpreter's real path (a pyenv shim of a version that is not "global" is resolved too).
PYTHON_EXE := $(shell tools/find_python.sh $(PYTHON))
PYVER := $(if $(PYTHON_EXE),$(shell $(PYTHON_EXE) -c 'import sys; print("%d.%d" % sys.version_info[:2])'))
TREE := $(ROS_DISTRO)-py$(PYVER)
ifeq ($(TREE),kilted-py3.11)
# The default combination keeps the paths every document and tool uses.
VENV := .venv
INSTALL := install
BUILD := build
else
VENV := .venv-$(TREE)
INSTALL := install-$(TREE)
BUILD := build/$(TREE)
endif
LOG := log/$(TREE)
PY := $(VENV)/bin/python
REQUIREMENTS := requirements/ros-$(ROS_DISTRO).txt
DEPS_STAMP := $(VENV)/.deps-stamp
BUILD_STAMP := $(INSTALL)/.build-stamp
STAGE := $(BUILD)/stage/damcseg_ros
# DDS discovery and traffic stay on 127.0.0.1 for everything started from here.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
ENV := export DAMCSEG_TREE=$(TREE) && source tools/env.sh &&
PYTEST_ARGS ?=
# make test-ros: test/ros plus the tests that touch ROS types or distro-dependent code (the
# ros_types marker, set by test/conftest.py), i.e. what can differ between distros.
ROS_TESTS := test/ros test/launch test/unit -m "ros or ros_types"

.PHONY: help setup test test-ros demo lint format clean

help:
	@echo "make demo   - set up (first run only) and run the demo"
	@echo "make test   - set up (first run only), lint, and run all tests"
	@echo "make setup  - only create the venv and build the ROS interfaces"
	@echo "make test-ros - set up, then only test/ros and the unit tests that touch ROS types"
	@echo "make clean  - remove the build, install and log trees of this combination (keeps the venv)"
	@echo "Options: ROS_DISTRO=$(DISTROS) (default kilted), PYTHON=python3.X (default python3.11)"
	@echo "         now: $(TREE) -> $(VENV)/ and $(INSTALL)/"

# A tree that is not the default one is ignored by git from inside (like Python 3.13's venvs do),
# so .gitignore needs no entry per combination.
$(DEPS_STAMP): setup.py $(REQUIREMENTS)
	@test -n "$(PYTHON_EXE)" || { echo "error: $(PYTHON) not found or not runnable; install CPython 3.11 or 3.12 (the ROS 2 wheels are cp311/cp312) or run make PYTHON=/path/to/python3.X"; exit 1; }
	@echo "==> creating $(VENV) ($(PYTHON_EXE), ROS 2 $(ROS_DISTRO)) and installing dependencies (first run: a few minutes)"
	test -x $(PY) || $(PYTHON_EXE) -m venv $(VENV)
	@[ "$(VENV)" = .venv ] || echo '*' > $(VENV)/.gitignore
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev,onnx]'
	$(PY) -m pip install -q -r $(REQUIREMENTS)
	$(PY) tools/fix_ros_wheel_cmake.py $(VENV)
	echo $(ROS_DISTRO) > $(VENV)/.ros-distro
	touch $@

# The package is staged outside the repository root for colcon: the venv lives inside the
# root, and CMake refuses exported include paths (numpy's) that lie inside the source tree.
$(BUILD_STAMP): $(DEPS_STAMP) package.xml CMakeLists.txt $(wildcard config/*.yaml config/*.xml launch/*.py) $(wildcard msg/*.msg) $(wildcard compat/vision_msgs/msg/*.msg) compat/vision_msgs/CMakeLists.txt
	@echo "==> building ROS interfaces with colcon ($(TREE) -> $(INSTALL))"
	rm -rf $(BUILD)/stage && mkdir -p $(STAGE)
	cp -r package.xml CMakeLists.txt msg damcseg_core damcseg_ros scripts launch config $(STAGE)/
	set +u; source $(VENV)/bin/activate; \
	export AMENT_PREFIX_PATH=$$VIRTUAL_ENV CMAKE_PREFIX_PATH=$$VIRTUAL_ENV; \
	paths="$(BUILD)/stage"; \
	if $(PY) -c "import vision_msgs.msg" 2>/dev/null; then echo "vision_msgs found: not building compat/vision_msgs"; \
	else paths="$$paths compat/vision_msgs"; fi; \
	colcon --log-base $(LOG) build --base-paths $$paths --build-base $(BUILD)/colcon --install-base $(INSTALL) \
	  --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE=$$VIRTUAL_ENV/bin/python
	@[ "$(INSTALL)" = install ] || echo '*' > $(INSTALL)/.gitignore
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

test-ros: setup
	$(ENV) export DAMCSEG_REQUIRE_ROS=1 && python -m pytest $(ROS_TESTS) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

demo: setup
	$(ENV) python -m damcseg_ros.demo $(DEMO_ARGS)

clean:
	rm -rf $(BUILD)/stage $(BUILD)/colcon $(INSTALL) $(LOG)
