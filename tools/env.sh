# Source this to get the project environment: venv + built interfaces + source tree first.
#   . tools/env.sh                                      Kilted + python3.11: .venv/, install/
#   ROS_DISTRO=jazzy PYTHON=python3.12 . tools/env.sh   .venv-jazzy-py3.12/, install-jazzy-py3.12/
# (the trees `make setup ROS_DISTRO=... PYTHON=...` builds; make passes DAMCSEG_TREE=jazzy-py3.12).
# DDS traffic stays on loopback (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST), always.
_damcseg_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
if [ -z "${DAMCSEG_TREE:-}" ]; then
  _damcseg_py="${PYTHON:-python3.11}"
  _damcseg_py="${_damcseg_py##*/}"
  DAMCSEG_TREE="${ROS_DISTRO:-kilted}-py${_damcseg_py#python}"
  unset _damcseg_py
fi
if [ "$DAMCSEG_TREE" = "kilted-py3.11" ]; then
  _damcseg_venv="$_damcseg_root/.venv" _damcseg_install="$_damcseg_root/install"
else
  _damcseg_venv="$_damcseg_root/.venv-$DAMCSEG_TREE" _damcseg_install="$_damcseg_root/install-$DAMCSEG_TREE"
fi
if [ ! -x "$_damcseg_venv/bin/python" ]; then
  echo "tools/env.sh: no venv for $DAMCSEG_TREE at $_damcseg_venv; run make setup ROS_DISTRO=${DAMCSEG_TREE%-py*} PYTHON=python${DAMCSEG_TREE##*-py}" >&2
  unset _damcseg_root _damcseg_venv _damcseg_install DAMCSEG_TREE
  return 1 2>/dev/null || exit 1
fi
export DAMCSEG_TREE
. "$_damcseg_venv/bin/activate"
if [ -f "$_damcseg_install/setup.sh" ]; then
  # colcon's setup.sh reads COLCON_CURRENT_PREFIX; unset AMENT_TRACE_SETUP_FILES noise.
  COLCON_CURRENT_PREFIX="$_damcseg_install" . "$_damcseg_install/setup.sh"
fi
export AMENT_PREFIX_PATH="${AMENT_PREFIX_PATH:+$AMENT_PREFIX_PATH:}$VIRTUAL_ENV"
export PYTHONPATH="$_damcseg_root${PYTHONPATH:+:$PYTHONPATH}"
# The distro of the wheels in this venv, as a sourced ROS 2 install would set it.
if [ -f "$_damcseg_venv/.ros-distro" ]; then
  ROS_DISTRO="$(cat "$_damcseg_venv/.ros-distro")"
else
  ROS_DISTRO="${DAMCSEG_TREE%-py*}"
fi
export ROS_DISTRO
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
# Fast DDS: 16 MB shared-memory segment per process instead of 512 KB, so camera-size images
# (0.5-3 MB) published best effort are not silently dropped (benchmarks/results/dds_large_images.md).
# It is the *publisher's* setting that counts. damcseg_ros/fastdds.py decides (the variable this
# Fast DDS reads: FASTRTPS_... on Fast DDS 2 / Jazzy, FASTDDS_... on Fast DDS 3 / Kilted); a profile
# of your own (either variable) is kept.
eval "$(python -m damcseg_ros.fastdds --shell)"
unset _damcseg_root _damcseg_venv _damcseg_install
