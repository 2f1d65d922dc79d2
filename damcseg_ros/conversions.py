"""``sensor_msgs/Image`` <-> numpy without cv_bridge (not installable from PyPI, see ROS_ON_PIP.md).

Reading is zero-copy where the layout allows it: the array is a strided *view* of ``msg.data``
(row padding is skipped through the row stride, big-endian 16-bit / float data through a
byte-order-aware dtype), so only the conversion to canonical units copies.

Every message is checked before any array is allocated, and the checks are strict on purpose:
a message whose ``data`` is longer than ``height * step`` is rejected like a shorter one,
because a header that does not describe the payload (wrong ``height`` or ``step``) would
otherwise be segmented as a silently garbled image.

Canonical units follow ``docs/interfaces.md``: rgb ``HxWx3`` uint8 RGB order; depth ``HxW``
float32 metres with NaN/inf/negative -> 0 (invalid); thermal ``HxW`` float32 counts divided by
the encoding's full scale (255 or 65535).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ENCODINGS",
    "INVALID_KINDS",
    "SUPPORTED",
    "ImageConversionError",
    "array_to_image",
    "blank_value",
    "check_image",
    "depth_from_image",
    "depth_value_faults",
    "image_to_array",
    "rgb_from_image",
    "stamp_ns",
    "thermal_from_image",
    "to_modality",
]

DEFAULT_MAX_PIXELS = 16_000_000
"""Largest image accepted (width * height); bigger ones are rejected before any allocation."""


@dataclasses.dataclass(frozen=True)
class Encoding:
    """Memory layout of one ``sensor_msgs/image_encodings`` name."""

    dtype: str  # numpy base type (byte order is set from is_bigendian)
    channels: int  # values per pixel


ENCODINGS: dict[str, Encoding] = {
    "rgb8": Encoding("u1", 3),
    "bgr8": Encoding("u1", 3),
    "rgba8": Encoding("u1", 4),
    "bgra8": Encoding("u1", 4),
    "mono8": Encoding("u1", 1),
    "mono16": Encoding("u2", 1),
    "16UC1": Encoding("u2", 1),
    "32FC1": Encoding("f4", 1),
}

SUPPORTED: dict[str, tuple[str, ...]] = {
    "rgb": ("rgb8", "bgr8", "rgba8", "bgra8", "mono8"),
    "depth": ("16UC1", "32FC1"),
    "thermal": ("mono8", "mono16", "16UC1"),
}
"""Encodings accepted per modality (depth per REP 118: 16UC1 millimetres, 32FC1 metres)."""


class ImageConversionError(ValueError):
    """An Image message cannot be read; the message names the field and the fix.

    Attributes:
        kind: short fault class for counters and rate-limited logs: ``encoding``, ``empty``,
            ``too_large``, ``step``, ``size`` (payload length) or ``modality``.
    """

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind


INVALID_KINDS = ("encoding", "empty", "too_large", "step", "size")
"""``ImageConversionError.kind`` values :func:`check_image` raises (the node counts each)."""


def stamp_ns(header: Any) -> int:
    """Header stamp in nanoseconds. Unlike ``rclpy.time.Time.from_msg`` it does not raise on a
    negative ``sec`` (a broken driver must not kill the node; the synchroniser drops it)."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def check_image(msg: Any, modality: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Encoding:
    """Validate an Image header against its payload without touching the pixels.

    Args:
        msg: a ``sensor_msgs/Image`` (or any object with its fields).
        modality: ``rgb``, ``depth`` or ``thermal`` (selects the accepted encodings).
        max_pixels: largest ``width * height`` accepted.

    Returns:
        The encoding's layout.

    Raises:
        ImageConversionError: unsupported encoding, zero or too large size, ``step`` too small,
            or ``len(data) != height * step``.
    """
    if modality not in SUPPORTED:
        raise ImageConversionError(f"unknown modality '{modality}'; valid: {list(SUPPORTED)}", "modality")
    enc_name = msg.encoding
    if enc_name not in SUPPORTED[modality]:
        hint = ""
        if modality == "depth" and enc_name in ("mono8", "mono16"):
            # mono16 has 16UC1's layout but means intensity (a thermal or IR camera): reading it as
            # millimetres would feed a plausible-looking but wrong depth, so it is refused.
            hint = (
                f" ('{enc_name}' is an intensity image, e.g. thermal or IR: depth must be 16UC1 "
                "millimetres or 32FC1 metres per REP 118; check the depth/image remapping)"
            )
        raise ImageConversionError(
            f"{modality} image has unsupported encoding '{enc_name}'; supported for {modality}: "
            f"{', '.join(SUPPORTED[modality])}{hint}",
            "encoding",
        )
    enc = ENCODINGS[enc_name]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageConversionError(
            f"{modality} image is empty ({width}x{height}); width and height must be > 0",
            "empty",
        )
    if height * width > max_pixels:
        raise ImageConversionError(
            f"{modality} image {width}x{height} has {height * width} pixels, more than max_pixels={max_pixels}; "
            "raise the 'max_pixels' parameter or downscale the camera",
            "too_large",
        )
    row_bytes = width * enc.channels * np.dtype(enc.dtype).itemsize
    if step < row_bytes:
        raise ImageConversionError(
            f"{modality} image step {step} is smaller than width*bytes_per_pixel = {row_bytes} "
            f"({width} px of {enc_name}); the publisher filled 'step' wrongly",
            "step",
        )
    size = len(msg.data)
    if size != height * step:
        raise ImageConversionError(
            f"{modality} image data has {size} bytes but height*step = {height}*{step} = {height * step}; "
            "header and payload disagree (a shorter payload is truncated, a longer one means "
            "height or step are wrong), so the frame is rejected",
            "size",
        )
    return enc


def image_to_array(msg: Any, modality: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A read-only view of the pixels: ``HxW`` (one channel) or ``HxWxC``, native layout.

    Zero-copy: row padding is skipped through the stride. Multi-byte samples keep the byte
    order given by ``is_bigendian`` in their dtype, so values read correctly on any host.

    Raises:
        ImageConversionError: see :func:`check_image`.
    """
    enc = check_image(msg, modality, max_pixels)
    dtype = np.dtype(enc.dtype).newbyteorder(">" if msg.is_bigendian else "<")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    h, w, c, step = int(msg.height), int(msg.width), enc.channels, int(msg.step)
    arr = np.ndarray(
        shape=(h, w, c), dtype=dtype, buffer=buf, offset=0, strides=(step, c * dtype.itemsize, dtype.itemsize)
    )
    arr.flags.writeable = False
    return arr[..., 0] if c == 1 else arr


def rgb_from_image(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """``HxWx3`` uint8 in RGB order (bgr/bgra reordered, alpha dropped, mono8 replicated).

    ``rgb8`` is returned as a zero-copy view (the Predictor copies it into a tensor anyway).
    """
    arr = image_to_array(msg, "rgb", max_pixels)
    enc = msg.encoding
    if enc == "rgb8":
        return arr
    if enc == "rgba8":
        return arr[..., :3]
    if enc in ("bgr8", "bgra8"):
        return arr[..., 2::-1]
    return np.repeat(arr[..., None], 3, axis=2)  # mono8


def depth_from_image(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """``HxW`` float32 metres; 16UC1 is millimetres; NaN, inf and negative values become 0 (invalid)."""
    arr = image_to_array(msg, "depth", max_pixels)
    if msg.encoding == "16UC1":
        return arr.astype(np.float32) * np.float32(1e-3)
    out = arr.astype(np.float32)  # native byte order, writable copy
    out[~np.isfinite(out) | (out < 0)] = 0.0
    return out


def depth_value_faults(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, int]:
    """Count the pixels of a depth image that carry no valid range.

    REP 118 lets 32FC1 use NaN (no return) and +-inf (out of range); a negative value is a driver
    bug. All of them become 0 (invalid) in :func:`depth_from_image`; this reports how many there
    were, so the node can count and explain them. 16UC1 cannot hold any of them.

    Returns:
        ``{"nan": n, "inf": n, "negative": n}`` pixel counts.
    """
    if msg.encoding != "32FC1":
        return {"nan": 0, "inf": 0, "negative": 0}
    arr = image_to_array(msg, "depth", max_pixels)
    return {
        "nan": int(np.count_nonzero(np.isnan(arr))),
        "inf": int(np.count_nonzero(np.isinf(arr))),
        "negative": int(np.count_nonzero(arr < 0)),  # -inf counts as inf and as negative
    }


def blank_value(array: np.ndarray) -> tuple[float, ...] | None:
    """The pixel value (one entry per channel) that every pixel of a converted frame holds, or
    ``None`` when the frame varies.

    A frame without any variation (a camera publishing black or frozen single-colour frames, a
    depth sensor with no valid return) carries no information about the scene; the node treats it
    as a dropped sensor (parameter ``blank_frames``). Exact equality, so a dark but noisy night
    frame is never blank.
    """
    if array.size == 0:
        return None
    # Per-channel min and max: two reductions on the node's hot path, no frame-sized temporary.
    flat = array.reshape(array.shape[0] * array.shape[1], -1) if array.ndim >= 2 else array.reshape(-1, 1)
    lo, hi = flat.min(axis=0), flat.max(axis=0)
    if (lo != hi).any():
        return None
    return tuple(float(v) for v in lo)


def thermal_from_image(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """``HxW`` float32 in [0, 1]: counts divided by the full scale (255 for mono8, 65535 for 16-bit)."""
    arr = image_to_array(msg, "thermal", max_pixels)
    scale = np.float32(1.0 / (255.0 if msg.encoding == "mono8" else 65535.0))
    return arr.astype(np.float32) * scale


_CONVERTERS = {"rgb": rgb_from_image, "depth": depth_from_image, "thermal": thermal_from_image}


def to_modality(msg: Any, modality: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Convert ``msg`` to the canonical array of ``modality`` (what ``Predictor.predict`` takes)."""
    try:
        return _CONVERTERS[modality](msg, max_pixels)
    except KeyError:
        raise ImageConversionError(
            f"unknown modality '{modality}'; valid: {list(_CONVERTERS)}", "modality"
        ) from None


def array_to_image(array: np.ndarray, encoding: str, header: Any = None) -> Any:
    """Build a ``sensor_msgs/Image`` (little-endian, no padding) from an array.

    Args:
        array: ``HxW`` or ``HxWxC`` whose dtype and channel count fit ``encoding``.
        encoding: one of :data:`ENCODINGS`.
        header: copied into the message when given.

    Raises:
        ImageConversionError: the array does not match the encoding.
    """
    from sensor_msgs.msg import Image

    if encoding not in ENCODINGS:
        raise ImageConversionError(f"unsupported encoding '{encoding}'; supported: {', '.join(ENCODINGS)}")
    enc = ENCODINGS[encoding]
    arr = np.asarray(array)
    channels = 1 if arr.ndim == 2 else arr.shape[2] if arr.ndim == 3 else -1
    if (
        channels != enc.channels
        or arr.dtype.kind != np.dtype(enc.dtype).kind
        or arr.dtype.itemsize != np.dtype(enc.dtype).itemsize
    ):
        raise ImageConversionError(
            f"array of shape {arr.shape} dtype {arr.dtype} does not fit encoding '{encoding}' "
            f"({enc.channels} channel(s) of {np.dtype(enc.dtype)})"
        )
    arr = np.ascontiguousarray(arr, dtype=np.dtype(enc.dtype).newbyteorder("<"))
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(arr.shape[1] * enc.channels * arr.dtype.itemsize)
    msg.data = arr.tobytes()
    return msg
