"""damcseg_ros: the ROS 2 node around :mod:`damcseg_core` (time sync, conversions, publishing).

The generated interface modules (``damcseg_ros.msg``) live in the colcon install tree, which
may be a different directory from this source package (e.g. when running tests from a
checkout). ``extend_path`` lets ``damcseg_ros.msg`` resolve from any ``damcseg_ros`` directory
on ``sys.path``.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
