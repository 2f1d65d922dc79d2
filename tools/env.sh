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
unset _damcseg_root
