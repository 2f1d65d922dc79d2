"""``PredictionResult`` -> ROS messages. Every message copies the header of the frame it describes.

* ``mask_image``: ``mono8`` class ids (the model's, Cityscapes train ids by default; 255 = unknown).
* ``color_image``: ``rgb8`` palette colours blended over the RGB frame (or colours alone).
* ``compressed_mask``: lossless PNG ``CompressedImage`` (JPEG would corrupt ids at borders).
* ``detections``: ``vision_msgs/Detection2DArray`` with bbox centre/size in input pixels.
* ``label_info``: ``vision_msgs/LabelInfo`` (the model's class ids with their names).
* ``scene_complexity``: ``damcseg_ros/SceneComplexity`` with every field of the result.

:class:`OutputPublishers` owns the node's output topics and publishes one frame to all of them.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import (
    BoundingBox2D,
    Detection2D,
    Detection2DArray,
    LabelInfo,
    ObjectHypothesisWithPose,
    VisionClass,
)

from damcseg_core.data.classes import CITYSCAPES_CLASSES, colorize
from damcseg_ros.conversions import array_to_image
from damcseg_ros.msg import SceneComplexity
from damcseg_ros.sync import MODALITIES

__all__ = [
    "PNG_FORMAT",
    "OutputPublishers",
    "color_image",
    "compressed_mask",
    "detections",
    "label_info",
    "mask_image",
    "overlay",
    "scene_complexity",
]

PNG_FORMAT = "mono8; png compressed"
"""``CompressedImage.format`` of the mask, as image_transport's png plugin writes it."""


def mask_image(mask: np.ndarray, header: Any) -> Image:
    """``mono8`` Image of the ``HxW`` uint8 class-id mask."""
    return array_to_image(np.asarray(mask, dtype=np.uint8), "mono8", header)


def _colorize(mask: np.ndarray, palette: np.ndarray | None) -> np.ndarray:
    if palette is None:
        return colorize(mask)
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8)[:255]
    return lut[np.asarray(mask, dtype=np.uint8)]


def overlay(
    mask: np.ndarray, rgb: np.ndarray | None, alpha: float, palette: np.ndarray | None = None
) -> np.ndarray:
    """``HxWx3`` uint8: palette colours blended with weight ``alpha`` over ``rgb``.

    ``palette`` (``[K, 3]``, the model's, ``Predictor.palette``) defaults to Cityscapes'. Ids
    without a colour (255 = unknown) keep the camera colour. Without ``rgb`` (RGB sensor absent)
    the plain palette colours are returned (unknown = black).
    """
    colours = _colorize(mask, palette)
    if rgb is None or rgb.shape[:2] != mask.shape:
        return colours
    blended = (alpha * colours.astype(np.float32) + (1.0 - alpha) * rgb.astype(np.float32) + 0.5).astype(
        np.uint8
    )
    unknown = mask >= (len(CITYSCAPES_CLASSES) if palette is None else len(palette))
    blended[unknown] = rgb[unknown]
    return blended


def color_image(
    mask: np.ndarray, rgb: np.ndarray | None, alpha: float, header: Any, palette: np.ndarray | None = None
) -> Image:
    """``rgb8`` overlay Image (see :func:`overlay`)."""
    return array_to_image(overlay(mask, rgb, alpha, palette), "rgb8", header)


def compressed_mask(mask: np.ndarray, header: Any) -> CompressedImage:
    """Lossless PNG of the mask; decoding it gives back the exact class ids.

    Raises:
        RuntimeError: OpenCV could not encode the mask.
    """
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(mask, dtype=np.uint8))
    if not ok:
        raise RuntimeError(f"PNG encoding of a {mask.shape} mask failed")
    msg = CompressedImage()
    msg.header = header
    msg.format = PNG_FORMAT
    msg.data = buf.tobytes()
    return msg


def _class_id(label: int, class_names: tuple[str, ...], fmt: str) -> str:
    if fmt == "name":
        return class_names[label] if 0 <= label < len(class_names) else str(label)
    return str(label)


def detections(
    result: Any, header: Any, score_threshold: float, class_id_format: str = "name"
) -> Detection2DArray:
    """Detections with ``score >= score_threshold`` as a ``Detection2DArray``.

    ``bbox.center`` is the box centre and ``size_x``/``size_y`` its width/height, in pixels of the
    input image; ``results[0].hypothesis.class_id`` is the class name (or train id as text when
    ``class_id_format == "id"``); ``id`` is the detection's index in the result.
    """
    out = Detection2DArray()
    out.header = header
    boxes = np.asarray(result.boxes, dtype=np.float64).reshape(-1, 4)
    for i, (box, score, label) in enumerate(zip(boxes, result.scores, result.labels)):
        if float(score) < score_threshold:
            continue
        x1, y1, x2, y2 = (float(v) for v in box)
        det = Detection2D()
        det.header = header
        det.id = str(i)
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = _class_id(int(label), tuple(result.class_names), class_id_format)
        hyp.hypothesis.score = float(score)
        det.results = [hyp]
        bbox = BoundingBox2D()
        bbox.center.position.x = (x1 + x2) / 2.0
        bbox.center.position.y = (y1 + y2) / 2.0
        bbox.center.theta = 0.0
        bbox.size_x = x2 - x1
        bbox.size_y = y2 - y1
        det.bbox = bbox
        out.detections.append(det)
    return out


def label_info(class_names: tuple[str, ...], threshold: float, header: Any) -> LabelInfo:
    """``LabelInfo`` mapping ids ``0..len-1`` to names; ``threshold`` = detection score threshold."""
    msg = LabelInfo()
    msg.header = header
    msg.class_map = [VisionClass(class_id=i, class_name=name) for i, name in enumerate(class_names)]
    msg.threshold = float(threshold)
    return msg


def scene_complexity(result: Any, header: Any, num_targets: int) -> SceneComplexity:
    """Every field of ``SceneComplexity`` from the result.

    Args:
        num_targets: detections that entered the scene estimate (the node passes all of the
            model's detections, since D is computed by the model before score filtering).
    """
    msg = SceneComplexity()
    msg.header = header
    # Field names predate the paper's symbols; msg/SceneComplexity.msg maps each one.
    msg.score = float(result.S)
    msg.target_density = float(result.D)
    msg.occlusion = float(result.O)
    msg.edge_density = float(result.E)
    msg.category = int(result.category)
    msg.num_targets = int(num_targets)
    msg.global_weight, msg.local_weight, msg.post_weight = (
        float(result.alpha),
        float(result.beta),
        float(result.gamma),
    )
    omega = np.asarray(result.omega, dtype=np.float32).reshape(3)
    msg.rgb_weight, msg.depth_weight, msg.thermal_weight = (float(x) for x in omega)
    for m in MODALITIES:
        setattr(msg, f"{m}_present", m in result.present)
        setattr(msg, f"{m}_completed", m in result.completed)
    return msg


class OutputPublishers:
    """The node's output topics: created at configure, filled once per processed frame.

    ``~/segmentation``, ``~/detections``, ``~/scene_complexity`` and the latched ``~/label_info``
    always; ``~/segmentation/color`` and ``~/segmentation/compressed`` when asked for. A new
    output topic is one more entry here (and in ``docs/interfaces.md``).

    Args:
        node: a lifecycle node (``create_lifecycle_publisher``).
        p: the node parameters (``output_qos_depth``, ``publish_*``, thresholds, ``color_alpha``).
        predictor: what the frames come from (its ``class_names`` and ``palette``).
    """

    def __init__(self, node: Any, p: Any, predictor: Any) -> None:
        from damcseg_ros.qos import latched_qos

        self._node, self._p, self._predictor = node, p, predictor
        make, depth = node.create_lifecycle_publisher, p.output_qos_depth
        self.pubs = {
            "mask": make(Image, "~/segmentation", depth),
            "detections": make(Detection2DArray, "~/detections", depth),
            "scene": make(SceneComplexity, "~/scene_complexity", depth),
            "label_info": make(LabelInfo, "~/label_info", latched_qos()),
        }
        if p.publish_color:
            self.pubs["color"] = make(Image, "~/segmentation/color", depth)
        if p.publish_compressed:
            self.pubs["compressed"] = make(CompressedImage, "~/segmentation/compressed", depth)

    def publish_label_info(self, header: Any) -> None:
        """The model's classes and the detection threshold (latched: late subscribers get it too)."""
        self.pubs["label_info"].publish(
            label_info(self._predictor.class_names, self._p.score_threshold, header)
        )

    def publish(self, result: Any, rgb: np.ndarray | None, header: Any) -> int:
        """Every per-frame output of ``result`` with ``header``; returns the boxes published."""
        p, pubs = self._p, self.pubs
        pubs["mask"].publish(mask_image(result.mask, header))
        if "color" in pubs:
            pubs["color"].publish(
                color_image(result.mask, rgb, p.color_alpha, header, self._predictor.palette)
            )
        if "compressed" in pubs:
            pubs["compressed"].publish(compressed_mask(result.mask, header))
        dets = detections(result, header, p.score_threshold, p.class_id_format)
        pubs["detections"].publish(dets)
        pubs["scene"].publish(scene_complexity(result, header, num_targets=len(result.scores)))
        return len(dets.detections)

    def destroy(self) -> None:
        for pub in self.pubs.values():
            self._node.destroy_lifecycle_publisher(pub)
        self.pubs = {}
