"""Guard for the launch_pytest test: skip it, with the reason, where launch_pytest cannot run it.

launch_pytest (every ROS 2 install has it) breaks under pytest >= 8.4 (ros2/launch#979): its
plugin reads ``fixture._pytestfixturefunction``, which pytest 8.4 removed, while *collecting* a
``@pytest.mark.launch`` test (``AttributeError: 'FixtureFunctionDefinition' object has no
attribute '_pytestfixturefunction'``). An import guard inside the test module cannot help, so
this conftest decides before the module is collected, from the installed versions and the
plugin's source (read as text: launch_pytest is never imported here), and turns the module into
one skipped collector that names the reason and the pin that works (pytest 8.3.5).

launch_testing's plugin fails earlier, at plugin load under pytest 9 (``PluginValidationError
... pytest_pycollect_makemodule ... {'path'}``); ``-p no:launch_testing`` in pyproject.toml's
addopts keeps it out (launch_pytest does not need it).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import pytest
from packaging.version import InvalidVersion, Version

LAUNCH_PYTEST_TEST = "test_launch.py"
WORKING_PYTEST = "8.3.5"
FIRST_BROKEN_PYTEST = Version("8.4")


def launch_pytest_problem(
    pytest_version: str, launch_pytest_version: str | None, plugin_source: str | None
) -> str | None:
    """Why launch_pytest cannot run a launch test here, or None when it can.

    Args:
        pytest_version: the installed pytest's version.
        launch_pytest_version: the installed launch_pytest's version ("" when unknown), None when
            launch_pytest is not installed.
        plugin_source: the text of ``launch_pytest/plugin.py``, None when not found.
    """
    if launch_pytest_version is None:
        return (
            "launch_pytest is not installed: it ships with a ROS 2 distro (apt), not with PyPI "
            "(see ROS_ON_PIP.md); the launch file's logic is tested in test_launch_file.py"
        )
    try:
        too_new = Version(pytest_version) >= FIRST_BROKEN_PYTEST
    except InvalidVersion:
        too_new = True
    source = plugin_source or ""
    fixed = "getfixturemarker" in source or "_fixture_function_marker" in source
    if not too_new or fixed or (plugin_source is not None and "_pytestfixturefunction" not in source):
        return None
    return (
        f"pytest {pytest_version} is newer than launch_pytest {launch_pytest_version or '(unknown version)'} "
        "supports: its plugin reads fixture._pytestfixturefunction, which pytest >= 8.4 removed "
        f"(ros2/launch#979); run this test with pytest=={WORKING_PYTEST} (pip install 'pytest=={WORKING_PYTEST}')"
    )


def _installed_launch_pytest() -> tuple[str | None, str | None]:
    """(version, plugin.py text) of the installed launch_pytest, without importing it."""
    try:
        spec = importlib.util.find_spec("launch_pytest")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        return None, None
    try:
        version = importlib.metadata.version("launch_pytest")
    except importlib.metadata.PackageNotFoundError:
        version = ""
    plugin = Path(spec.origin).parent / "plugin.py"
    return version, plugin.read_text() if plugin.is_file() else None


PROBLEM = launch_pytest_problem(pytest.__version__, *_installed_launch_pytest())


class _SkippedModule(pytest.File):
    """Stands in for a test module that must not be imported or collected; reports the skip."""

    def collect(self):
        pytest.skip(PROBLEM)


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path, parent):
    if PROBLEM is not None and module_path.name == LAUNCH_PYTEST_TEST:
        return _SkippedModule.from_parent(parent, path=module_path)
    return None
