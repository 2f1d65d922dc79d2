"""pip install path for damcseg (works without any ROS install).

``pip install -e .`` gives the pure-PyTorch ``damcseg_core`` package and its console scripts
(data generation, training, evaluation, export). The ROS node (``damcseg_ros``) additionally
needs rclpy and the interfaces built by colcon; see README. colcon builds this package with
``ament_cmake`` (package.xml) and ignores this file.
"""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
_CLI = {
    "damcseg-make-synthetic": "damcseg_core.cli.make_synthetic:main",
    "damcseg-info": "damcseg_core.cli.info:main",
    "damcseg-train": "damcseg_core.cli.train:main",
    "damcseg-train-depth": "damcseg_core.cli.train_depth:main",
    "damcseg-eval": "damcseg_core.cli.eval:main",
    "damcseg-bag-eval": "damcseg_core.cli.bag_eval:main",
    "damcseg-export": "damcseg_core.cli.export:main",
    "damcseg-ablate": "damcseg_core.cli.ablate:main",
}
# Only advertise commands whose module exists in this checkout.
console_scripts = [
    f"{name} = {target}"
    for name, target in _CLI.items()
    if (ROOT / (target.split(":")[0].replace(".", "/") + ".py")).is_file()
]

setup(
    name="damcseg",
    version="0.1.0",
    description="DAMCSeg: multi-modal RGB/depth/thermal segmentation + detection robust to sensor dropout",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").is_file() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["damcseg_core", "damcseg_core.*", "damcseg_ros", "damcseg_ros.*"]),
    package_data={"damcseg_core": ["weights/*.pt", "weights/*.md"]},
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "timm>=1.0",
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "rosbags>=0.10",
        "matplotlib>=3.7",
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "ruff>=0.6",
            "torchmetrics>=1.4",
            "pycocotools>=2.0.7",
            "scipy>=1.11",
            "tensorboard>=2.15",
        ],
        # onnxscript: torch.onnx.export (dynamo exporter) needs it; onnxruntime runs the exported graph.
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.2"],
        "bench": [
            "segmentation-models-pytorch>=0.3",
            "transformers>=4.40",
            "onnx>=1.16",
            "onnxruntime>=1.18",
            "onnxscript>=0.2",
        ],
    },
    entry_points={"console_scripts": console_scripts},
)
