"""launch/damcseg.launch.py: its wiring on every machine, its failures under a real launch.

``launch``/``launch_ros`` are not on PyPI (ROS_ON_PIP.md). The wiring tests load the launch file
against small recording stand-ins for the launch classes it uses (their constructor arguments
are what launch would receive), so they check what the file hands to launch: every argument
declared, the file check and the argument validation before any Node exists, the Node's
parameters/remaps/respawn, and the exit handler raising (what makes ``ros2 launch`` return
non-zero) with the node's reason. Where launch and launch_ros are installed the last tests run
the launch file for real: ``config_file:=/nonexistent.yaml`` and a node that dies at start-up
must both end the launch with a non-zero status and the reason in its output.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

from damcseg_ros import launch_args
from damcseg_ros.fastdds import profile_setting

REPO = Path(__file__).resolve().parents[2]
LAUNCH_FILE = REPO / "launch" / "damcseg.launch.py"
CONFIG = REPO / "config" / "damcseg.yaml"


class Recorded:
    """A stand-in launch class: keeps its constructor arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


class ExecuteProcess(Recorded):
    def __init__(self, *, respawn=False, respawn_delay=None, respawn_max_retries=-1, **kwargs):  # Iron+
        super().__init__(**kwargs)


class LaunchConfiguration(Recorded):
    def perform(self, context: Any) -> str:
        return context.values[self.args[0]]


def _fake_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    names = {
        "launch": ["LaunchDescription"],
        "launch.actions": [
            "DeclareLaunchArgument", "OpaqueFunction", "SetEnvironmentVariable", "EmitEvent", "LogInfo",
            "RegisterEventHandler",
        ],
        "launch.event_handlers": ["OnProcessExit", "OnProcessIO"],
        "launch.events": ["Shutdown"],
        "launch.substitutions": [],
        "launch_ros": [],
        "launch_ros.actions": ["Node"],
    }  # fmt: skip
    for module_name, classes in names.items():
        module = types.ModuleType(module_name)
        for cls in classes:
            setattr(module, cls, type(cls, (Recorded,), {}))
        monkeypatch.setitem(sys.modules, module_name, module)
    sys.modules["launch.actions"].ExecuteProcess = ExecuteProcess
    sys.modules["launch.substitutions"].LaunchConfiguration = LaunchConfiguration


@pytest.fixture
def launch_file(monkeypatch):
    """The launch file as a module, importing the stand-ins, with the package share = this repo."""
    _fake_launch(monkeypatch)
    spec = importlib.util.spec_from_file_location("damcseg_launch_under_test", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "_share", lambda *parts: str(REPO.joinpath(*parts)))
    return module


def _context(**overrides: str) -> types.SimpleNamespace:
    values = {name: default for name, default, _d, _c in launch_args.arguments(str(CONFIG))}
    values.update(overrides)
    return types.SimpleNamespace(values=values, is_shutdown=False)


def _by_type(entities: list[Any], name: str) -> list[Any]:
    return [e for e in entities if type(e).__name__ == name]


def test_launch_file_imports_no_launch_module_at_import_time():
    # Loading it must not need launch (pip-only machines can still read its arguments).
    code = f"import importlib.util as u; s = u.spec_from_file_location('lf', {str(LAUNCH_FILE)!r}); " \
        "m = u.module_from_spec(s); s.loader.exec_module(m); import sys; " \
        "print(sorted(k for k in sys.modules if k.split('.')[0] in ('launch', 'launch_ros')))"  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_description_declares_every_argument_then_the_node_function(launch_file):
    description = launch_file.generate_launch_description()
    entities = description.args[0]
    declared = {d.args[0]: d.kwargs for d in _by_type(entities, "DeclareLaunchArgument")}
    assert list(declared) == [name for name, *_ in launch_args.argument_rows()]
    assert declared["config_file"]["default_value"] == str(CONFIG)
    assert declared["use_sim_time"]["default_value"] == "false"
    assert all(len(kw["description"]) > 15 for kw in declared.values())
    (opaque,) = _by_type(entities, "OpaqueFunction")
    assert opaque.kwargs["function"] is launch_file._node_actions


def test_description_sets_the_fast_dds_profile_the_policy_picks(launch_file, monkeypatch):
    for var in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "RMW_IMPLEMENTATION"):
        monkeypatch.delenv(var, raising=False)
    entities = launch_file.generate_launch_description().args[0]
    assert [e.args for e in _by_type(entities, "SetEnvironmentVariable")] == [profile_setting()]
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", "/etc/mine.xml")
    assert _by_type(launch_file.generate_launch_description().args[0], "SetEnvironmentVariable") == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"config_file": "/nonexistent.yaml"}, "config_file:=/nonexistent.yaml: no such file"),
        ({"use_sim_time": "maybe"}, "use_sim_time:=maybe is not a boolean; valid values: true, false"),
        ({"backend": "tensorrt"}, "backend:=tensorrt is not valid; valid values: torch, onnxruntime"),
    ],
)
def test_bad_arguments_raise_before_any_node_exists(launch_file, overrides, message):
    watch_box: list = []
    with pytest.raises(launch_args.LaunchArgumentError, match=message):
        launch_file._node_actions(_context(**overrides), watch_box)
    assert watch_box == []


def test_node_gets_the_config_overrides_remaps_and_respawn(launch_file):
    entities = launch_file._node_actions(
        _context(checkpoint="/m.pt", rgb_topic="/cam/image_raw", respawn="true", respawn_max_retries="3"), []
    )
    (node,) = _by_type(entities, "Node")
    kw = node.kwargs
    assert (kw["package"], kw["executable"]) == ("damcseg_ros", "damcseg_node")
    assert kw["parameters"] == [str(CONFIG), {"checkpoint": "/m.pt", "use_sim_time": False}]
    assert ("rgb/image", "/cam/image_raw") in kw["remappings"]
    assert ("rgb/camera_info", "/cam/camera_info") in kw["remappings"]
    assert (kw["respawn"], kw["respawn_delay"], kw["respawn_max_retries"]) == (True, 2.0, 3)
    assert kw["arguments"] == ["--ros-args", "--log-level", "info"]


def _handlers(entities: list[Any]) -> dict[str, Any]:
    return {type(r.args[0]).__name__: r.args[0] for r in _by_type(entities, "RegisterEventHandler")}


def test_exit_handler_fails_the_launch_with_the_nodes_reason(launch_file):
    entities = launch_file._node_actions(_context(), [])
    (node,) = _by_type(entities, "Node")
    handlers = _handlers(entities)
    assert handlers["OnProcessExit"].kwargs["target_action"] is node
    assert handlers["OnProcessIO"].kwargs["target_action"] is node
    io = types.SimpleNamespace(text=b"[FATAL] [1.0] [damcseg]: checkpoint not found: /m.pt\n")
    handlers["OnProcessIO"].kwargs["on_stderr"](io)
    on_exit = handlers["OnProcessExit"].kwargs["on_exit"]
    with pytest.raises(
        RuntimeError, match=r"damcseg exited with exit code 1 .*: checkpoint not found: /m\.pt"
    ):
        on_exit(types.SimpleNamespace(returncode=1), types.SimpleNamespace(is_shutdown=False))


def test_exit_handler_shuts_down_cleanly_on_exit_0_and_ignores_exits_during_shutdown(launch_file):
    on_exit = _handlers(launch_file._node_actions(_context(), []))["OnProcessExit"].kwargs["on_exit"]
    actions = on_exit(types.SimpleNamespace(returncode=0), types.SimpleNamespace(is_shutdown=False))
    (emit,) = _by_type(actions, "EmitEvent")
    assert "exit code 0" in emit.kwargs["event"].kwargs["reason"]
    assert on_exit(types.SimpleNamespace(returncode=-15), types.SimpleNamespace(is_shutdown=True)) is None


def test_exit_handler_logs_a_respawn_instead_of_failing(launch_file):
    on_exit = _handlers(launch_file._node_actions(_context(respawn="true"), []))["OnProcessExit"].kwargs[
        "on_exit"
    ]
    (log,) = on_exit(types.SimpleNamespace(returncode=1), types.SimpleNamespace(is_shutdown=False))
    assert type(log).__name__ == "LogInfo" and log.kwargs["msg"].endswith("respawn in 2 s")


def _conftest():
    spec = importlib.util.spec_from_file_location(
        "launch_conftest_under_test", Path(__file__).with_name("conftest.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BROKEN_PLUGIN = "scope = fixture._pytestfixturefunction.scope\n"
FIXED_PLUGIN = "marker = getfixturemarker(fixture)\n"


@pytest.mark.parametrize(
    ("pytest_version", "launch_pytest_version", "source", "expected"),
    [
        ("8.3.5", "3.7.1", BROKEN_PLUGIN, None),
        ("8.4.2", "3.7.1", BROKEN_PLUGIN, "pytest 8.4.2 is newer than launch_pytest 3.7.1 supports"),
        ("9.2.0", "3.4.4", BROKEN_PLUGIN, "ros2/launch#979); run this test with pytest==8.3.5"),
        ("9.2.0", "3.9.0", FIXED_PLUGIN, None),
        ("9.2.0", None, None, "launch_pytest is not installed"),
    ],
)
def test_launch_pytest_guard_decides_from_versions_and_plugin(
    pytest_version, launch_pytest_version, source, expected
):
    problem = _conftest().launch_pytest_problem(pytest_version, launch_pytest_version, source)
    if expected is None:
        assert problem is None
    else:
        assert expected in problem


try:  # the real launch stack, where a ROS 2 distro provides it
    # (a bare `import launch` would find this repository's launch/ folder as a namespace package)
    from launch import LaunchService  # noqa: F401
    from launch_ros.actions import Node  # noqa: F401

    NO_LAUNCH = ""
except Exception as exc:  # ImportError on pip-only machines
    NO_LAUNCH = (
        f"launch/launch_ros not importable ({type(exc).__name__}: {exc}); they ship with a ROS 2 distro"
    )

RUN_LAUNCH = textwrap.dedent(
    """
    import sys
    from launch import LaunchDescription, LaunchService
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    args = dict(a.split(":=", 1) for a in sys.argv[2:])
    service = LaunchService()
    service.include_launch_description(LaunchDescription([IncludeLaunchDescription(
        PythonLaunchDescriptionSource(sys.argv[1]), launch_arguments=args.items())]))
    sys.exit(service.run())
    """
)


def _run_launch(*arguments: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-c", RUN_LAUNCH, str(LAUNCH_FILE), *arguments],
        capture_output=True, text=True, env=env, timeout=180,
    )  # fmt: skip


@pytest.mark.skipif(bool(NO_LAUNCH), reason=NO_LAUNCH)
@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (("config_file:=/nonexistent.yaml",), "config_file:=/nonexistent.yaml: no such file"),
        (("use_sim_time:=maybe",), "use_sim_time:=maybe is not a boolean"),
        (("checkpoint:=/nonexistent/model.pt",), "exited with exit code 1"),
    ],
)
def test_real_launch_fails_non_zero_with_the_reason(arguments, expected):
    out = _run_launch(*arguments)
    assert out.returncode != 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert expected in out.stdout + out.stderr
