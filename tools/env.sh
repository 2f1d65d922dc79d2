# Source this to get the project environment: venv + built interfaces + source tree first.
#   . tools/env.sh
# DDS traffic stays on loopback (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST), always.
_damcseg_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
. "$_damcseg_root/.venv/bin/activate"
if [ -f "$_damcseg_root/install/setup.sh" ]; then
  # colcon's setup.sh reads COLCON_CURRENT_PREFIX; unset AMENT_TRACE_SETUP_FILES noise.
  COLCON_CURRENT_PREFIX="$_damcseg_root/install" . "$_damcseg_root/install/setup.sh"
fi
export AMENT_PREFIX_PATH="${AMENT_PREFIX_PATH:+$AMENT_PREFIX_PATH:}$VIRTUAL_ENV"
export PYTHONPATH="$_damcseg_root${PYTHONPATH:+:$PYTHONPATH}"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
# Fast DDS: 16 MB shared-memory segment per process instead of 512 KB, so camera-size images
# (0.5-3 MB) published best effort are not silently dropped (benchmarks/results/dds_large_images.md).
# It is the *publisher's* setting that counts. A profile of your own (either variable) is kept.
if [ -z "${FASTDDS_DEFAULT_PROFILES_FILE:-}" ] && [ -z "${FASTRTPS_DEFAULT_PROFILES_FILE:-}" ]; then
  export FASTDDS_DEFAULT_PROFILES_FILE="$_damcseg_root/config/fastdds_large_images.xml"
fi
unset _damcseg_root
