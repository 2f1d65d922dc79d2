"""Launch the damcseg node (ROS 2 Humble / Jazzy / Kilted) with config/damcseg.yaml.

Example::

    ros2 launch damcseg_ros damcseg.launch.py checkpoint:=/models/damcseg_edge.pt device:=cuda \\
        backend:=onnxruntime onnx_path:=/models/damcseg_edge_onnx \\
        rgb_topic:=/camera/color/image_raw depth_topic:=/camera/depth/image_rect_raw \\
        thermal_topic:=/flir/image_raw namespace:=front respawn:=true

Arguments left empty keep the value of the config file (``ros2 launch ... -s`` lists them).
Fails loudly, returning non-zero: a ``config_file`` that does not exist, a bad boolean or enum
value (``use_sim_time:=maybe``: the valid values are named), and the node exiting while the
launch runs (its exit code, what it means and its last FATAL line; ``respawn:=true`` restarts it
instead). The rules live in ``damcseg_ros/launch_args.py`` (unit-tested without ``launch``);
this file only wires them into launch actions.

Without the launch package (pip-only machines) run the same node directly::

    python -m damcseg_ros.node --ros-args --params-file config/damcseg.yaml -p checkpoint:=...
"""

from __future__ import annotations

import inspect
import os

PACKAGE = "damcseg_ros"
EXECUTABLE = "damcseg_node"


def _share(*parts: str) -> str:
    from ament_index_python.packages import get_package_share_directory

    return os.path.join(get_package_share_directory(PACKAGE), *parts)


def _node_actions(context, watch_box: list):
    """OpaqueFunction body: validate every argument, then the Node and its exit handlers.

    A bad value raises here; the launch service reports the message ("Caught exception in
    launch ...: invalid launch arguments: ...") and returns 1 before any process starts.
    """
    from launch.actions import EmitEvent, LogInfo, RegisterEventHandler
    from launch.event_handlers import OnProcessExit, OnProcessIO
    from launch.events import Shutdown
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from damcseg_ros import launch_args

    values = {name: LaunchConfiguration(name).perform(context) for name, *_ in launch_args.argument_rows()}
    settings = launch_args.resolve(values)
    watch = launch_args.ExitWatch(settings)
    watch_box.append(watch)
    respawn = {"respawn": settings.respawn, "respawn_delay": settings.respawn_delay}
    # respawn_max_retries exists from Iron on; Humble's launch counts on our handler alone.
    if "respawn_max_retries" in inspect.signature(_execute_process_init()).parameters:
        respawn["respawn_max_retries"] = settings.respawn_max_retries
    node = Node(
        package=PACKAGE,
        executable=EXECUTABLE,
        name=settings.name,
        namespace=settings.namespace,
        parameters=settings.parameters,
        remappings=settings.remappings,
        arguments=settings.ros_arguments,
        output="screen",
        emulate_tty=True,
        **respawn,
    )

    def on_exit(event, exit_context):
        decision = watch.on_exit(event.returncode, exit_context.is_shutdown)
        if decision.action == "fail":
            # An exception is what makes LaunchService.run() (and so `ros2 launch`) return non-zero;
            # a plain Shutdown event returns 0.
            raise RuntimeError(decision.message)
        if decision.action == "shutdown":
            return [LogInfo(msg=decision.message), EmitEvent(event=Shutdown(reason=decision.message))]
        if decision.action == "respawn":
            return [LogInfo(msg=decision.message)]
        return None

    def on_output(event):
        watch.on_output(event.text)

    return [
        node,
        RegisterEventHandler(OnProcessIO(target_action=node, on_stdout=on_output, on_stderr=on_output)),
        RegisterEventHandler(OnProcessExit(target_action=node, on_exit=on_exit)),
    ]


def _execute_process_init():
    from launch.actions import ExecuteProcess

    return ExecuteProcess.__init__


def _fastdds_profile():
    """The large-image Fast DDS profile for the node (damcseg_ros.fastdds decides: variable, file)."""
    from launch.actions import SetEnvironmentVariable

    from damcseg_ros.fastdds import profile_setting

    setting = profile_setting()
    return [] if setting is None else [SetEnvironmentVariable(*setting)]


def generate_launch_description():
    """Declare the arguments and start the node (launch is imported here, not at module level)."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    from damcseg_ros import launch_args

    declared = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, default, description, _choices in launch_args.arguments(_share("config", "damcseg.yaml"))
    ]
    watch_box: list = []  # the ExitWatch of this launch, for tests and debugging
    return LaunchDescription(
        [*declared, *_fastdds_profile(), OpaqueFunction(function=_node_actions, args=[watch_box])]
    )
