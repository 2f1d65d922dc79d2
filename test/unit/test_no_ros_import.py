"""damcseg_core must stay ROS-free: importing any of it never pulls in rclpy or messages."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "damcseg_core"
FORBIDDEN = ("rclpy", "cv_bridge", "rosidl", "damcseg_ros")


def _is_forbidden(module: str) -> bool:
    top = module.split(".")[0]
    return top in FORBIDDEN or top.endswith("_msgs")


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(CORE)))
def test_source_has_no_ros_imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad += [a.name for a in node.names if _is_forbidden(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            bad += [node.module] if _is_forbidden(node.module) else []
    assert not bad, f"{path} imports ROS modules {bad}; damcseg_core must not depend on ROS"


def _expected_modules() -> set[str]:
    names = set()
    for path in CORE.rglob("*.py"):
        rel = path.relative_to(CORE.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        if rel.name != "__main__":
            names.add(".".join(parts))
    return names


def test_importing_every_core_module_leaves_ros_out_of_sys_modules():
    code = (
        "import importlib, pkgutil, sys\n"
        "import damcseg_core\n"
        "for m in pkgutil.walk_packages(damcseg_core.__path__, 'damcseg_core.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('rclpy', 'cv_bridge', 'rosidl_runtime_py')"
        " or n.split('.')[0].endswith('_msgs'))\n"
        "print('LOADED', ' '.join(sorted(n for n in sys.modules if n.startswith('damcseg_core'))))\n"
        "print('BAD', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "BAD []" in out.stdout, out.stdout
    loaded = set(out.stdout.split("LOADED ")[1].splitlines()[0].split())
    # Every module file was really imported (a subpackage without __init__.py would be skipped).
    assert _expected_modules() <= loaded, sorted(_expected_modules() - loaded)


def test_public_entry_points_are_lazy_and_resolve():
    code = (
        "import sys, damcseg_core\n"
        "assert 'torch' not in sys.modules, 'import damcseg_core must stay cheap'\n"
        "from damcseg_core import Predictor, PredictionResult, build_model, load_model\n"
        "print(Predictor.__module__, build_model.__module__, load_model.__module__)\n"
        "try:\n"
        "    damcseg_core.nonexistent\n"
        "except AttributeError as exc:\n"
        "    print('ERR', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (
        out.stdout.splitlines()[0]
        == "damcseg_core.inference.predictor damcseg_core.models.registry damcseg_core.checkpoint"
    )
    assert "ERR module 'damcseg_core' has no attribute 'nonexistent'" in out.stdout
