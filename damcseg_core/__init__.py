"""DAMCSeg core: multi-modal (RGB / depth / thermal) detection + segmentation in pure PyTorch.

This package never imports ROS (rclpy, *_msgs, cv_bridge); ``test/unit/test_no_ros_import.py``
enforces it. Heavy submodules (models, training) are imported on first use, so
``import damcseg_core`` stays cheap.
"""

__version__ = "0.1.0"

MODALITIES = ("rgb", "depth", "thermal")
"""Fixed modality keys used everywhere; a missing key means "sensor absent"."""

__all__ = ["MODALITIES", "__version__"]
