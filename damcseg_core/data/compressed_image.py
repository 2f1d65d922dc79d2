"""``sensor_msgs/CompressedImage`` as image_transport writes it, <-> numpy (OpenCV; no ROS at all).

Here in damcseg_core so that the bag reader/writer (:mod:`damcseg_core.data.rosbag_io`) uses the
same codec as the node; ``damcseg_ros.compressed`` is the node's view of it (errors as
``ImageConversionError``, accepted encodings per modality from ``damcseg_ros.conversions``).

Two transports:

* ``<topic>/compressed`` (compressed_image_transport): JPEG or PNG. ``format`` is
  ``"<encoding>; <jpeg|png> compressed <target>"``, e.g. ``"rgb8; jpeg compressed bgr8"``,
  ``"mono16; png compressed mono16"``; older publishers leave ``<target>`` out
  (``"mono16; png compressed"``) or write only ``"jpeg"``/``"png"``. Colour is stored BGR.
  JPEG is 8-bit only (a 16-bit source is scaled to mono8: the target says so); PNG keeps 16 bits.
* ``<topic>/compressedDepth`` (compressed_depth_image_transport): a 12-byte ``ConfigHeader``
  (little-endian ``int32`` compression format, 0 = inverse depth, then two ``float32``
  quantisation parameters A and B) followed by a 16-bit single-channel PNG. ``format`` is
  ``"16UC1; compressedDepth png"`` (older: ``"16UC1; compressedDepth"`` or just ``"16UC1"``).
  16UC1 millimetres are stored as they are (values above ``depth_max`` become 0). 32FC1 metres
  are stored as quantised inverse depth: ``q = A / d + B`` with ``A = z0 * (z0 + 1)`` and
  ``B = 1 - A / depth_max`` (``z0`` = depth_quantization), ``q = 0`` for no return or beyond
  ``depth_max``; decoding gives ``d = A / (q - B)`` and NaN where ``q == 0``.

:func:`decode` returns a :class:`Decoded` (encoding + array laid out as the equivalent raw
``sensor_msgs/Image`` would hold it: rgb8 RGB order, mono8/mono16, 16UC1 or 32FC1), so the
node feeds it to the same checks, synchroniser and conversions as raw images. Every bad payload
(unparsable format, truncated or corrupt JPEG/PNG, wrong bit depth or channel count, a header
that does not match, too many pixels) raises :class:`CompressedImageError` whose ``kind`` is one
of the node's invalid-input kinds (``damcseg_ros.conversions.INVALID_KINDS``):
``encoding`` (format or pixel layout does not match what ``format`` declares), ``size``
(payload truncated, corrupt or shorter than its header), ``empty``, ``too_large``.
"""

from __future__ import annotations

import dataclasses
import re
import struct
from typing import Any

import cv2
import numpy as np

DEFAULT_MAX_PIXELS = 16_000_000
"""Largest image accepted (width * height), as damcseg_ros.conversions."""
MODALITY_ENCODINGS: dict[str, tuple[str, ...]] = {
    "rgb": ("rgb8", "mono8"),
    "depth": ("16UC1", "32FC1"),
    "thermal": ("mono8", "mono16", "16UC1"),
}
"""What a decoded image of each modality may be (a subset of damcseg_ros.conversions.SUPPORTED)."""


class CompressedImageError(ValueError):
    """A CompressedImage cannot be decoded; ``kind`` is ``encoding``, ``size``, ``empty``,
    ``too_large`` or ``modality`` (the node's invalid-input counters)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


__all__ = [
    "CONFIG_HEADER",
    "DEFAULT_DEPTH_MAX",
    "DEFAULT_DEPTH_QUANTIZATION",
    "DEFAULT_MAX_PIXELS",
    "INV_DEPTH",
    "MODALITY_ENCODINGS",
    "SENSOR_TRANSPORTS",
    "TRANSPORTS",
    "CompressedFormat",
    "CompressedImageError",
    "Decoded",
    "decode",
    "decode_compressed",
    "decode_compressed_depth",
    "encode_compressed",
    "encode_compressed_depth",
    "parse_config_header",
    "parse_format",
    "transport_topic",
]

TRANSPORTS = ("raw", "compressed", "compressedDepth")
"""image_transport names: the topic suffix of each (raw: none)."""
SENSOR_TRANSPORTS: dict[str, tuple[str, ...]] = {
    "rgb": ("raw", "compressed"),
    "depth": ("raw", "compressed", "compressedDepth"),
    "thermal": ("raw", "compressed"),
}
"""The transports each sensor can come on (compressedDepth is for depth only)."""
CONFIG_HEADER = struct.Struct("<iff")
"""compressed_depth_image_transport's ConfigHeader: int32 format, float32 depthParam[2] (12 bytes)."""
INV_DEPTH = 0
"""ConfigHeader.format of every compressedDepth image (the only value upstream writes)."""
DEFAULT_DEPTH_MAX = 10.0
DEFAULT_DEPTH_QUANTIZATION = 100.0
"""compressed_depth_image_transport's defaults for depth_max (m) and depth_quantization."""

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_MAGIC = b"\xff\xd8"
_JPEG_END = b"\xff\xd9"
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_BIT_DEPTH = {"rgb8": 8, "bgr8": 8, "rgba8": 8, "bgra8": 8, "mono8": 8, "8UC1": 8, "mono16": 16, "16UC1": 16,
              "bgr16": 16, "rgb16": 16, "32FC1": 32}  # fmt: skip
_COLOUR = {"rgb8", "bgr8", "rgba8", "bgra8", "rgb16", "bgr16", "rgba16", "bgra16"}


def transport_topic(topic: str, transport: str) -> str:
    """The topic image_transport uses for ``transport``: ``rgb/image`` -> ``rgb/image/compressed``."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {list(TRANSPORTS)}, got {transport!r}")
    return topic if transport == "raw" else f"{topic.rstrip('/')}/{transport}"


@dataclasses.dataclass(frozen=True)
class CompressedFormat:
    """A parsed ``CompressedImage.format``."""

    source: str  # encoding of the image before compression ("" when the format names only the codec)
    codec: str  # "jpeg" | "png" (| "rvl" for compressedDepth, refused)
    target: str  # what the payload holds ("bgr8", "mono8", "mono16", ...), "" when not given
    depth: bool  # compressedDepth (ConfigHeader + PNG) rather than compressed


_FORMAT = re.compile(r"^\s*([\w]*)\s*(?:;\s*(.*))?$")


def parse_format(text: str, depth: bool = False) -> CompressedFormat:
    """Parse the ``format`` string image_transport writes (see the module docstring).

    Args:
        text: ``CompressedImage.format``.
        depth: the message came on a ``compressedDepth`` topic.

    Raises:
        CompressedImageError: (kind ``encoding``) a format neither plugin writes.
    """
    match = _FORMAT.match(text or "")
    rest = (match.group(2) or "").strip() if match else ""
    first = match.group(1) if match else ""
    bad = CompressedImageError(
        f"CompressedImage format {text!r} is not one image_transport writes; expected e.g. "
        + (
            "'16UC1; compressedDepth png'"
            if depth
            else "'rgb8; jpeg compressed bgr8' or 'mono16; png compressed'"
        ),
        "encoding",
    )
    if match is None:
        raise bad
    if depth:
        if not first:
            raise bad
        if not rest or rest == "compressedDepth":
            return CompressedFormat(first, "png", first, True)  # older publishers: png only
        words = rest.split()
        if words[0] != "compressedDepth" or len(words) != 2 or words[1] not in ("png", "rvl"):
            raise bad
        return CompressedFormat(first, words[1], first, True)
    if not rest:  # "jpeg" / "png" alone
        codec = first.lower()
        if codec in ("jpg", "jpeg"):
            return CompressedFormat("", "jpeg", "", False)
        if codec == "png":
            return CompressedFormat("", "png", "", False)
        raise bad
    words = rest.split()
    if len(words) not in (2, 3) or words[1] != "compressed" or words[0] not in ("jpeg", "png"):
        raise bad
    return CompressedFormat(first, words[0], words[2] if len(words) == 3 else "", False)


@dataclasses.dataclass(frozen=True)
class Decoded:
    """A decoded image: the raw ``sensor_msgs/Image`` encoding and its pixels in that layout."""

    encoding: str
    array: np.ndarray


def _buffer(data: Any) -> np.ndarray:
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def _peek_size(buf: np.ndarray, codec: str, what: str) -> tuple[int, int]:
    """(width, height) from the PNG IHDR / JPEG SOF header, checked before any pixel is decoded."""
    raw = buf.tobytes() if buf.size < 64 else bytes(buf[: min(buf.size, 65536)])
    if codec == "png":
        if len(raw) < 24 or not raw.startswith(_PNG_MAGIC) or raw[12:16] != b"IHDR":
            raise CompressedImageError(f"{what} is not a PNG (no PNG signature/IHDR)", "size")
        return struct.unpack(">II", raw[16:24])
    if not raw.startswith(_JPEG_MAGIC):
        raise CompressedImageError(f"{what} is not a JPEG (no SOI marker)", "size")
    i = 2
    while i + 9 < len(raw):
        if raw[i] != 0xFF:
            i += 1
            continue
        marker = raw[i + 1]
        if marker in (0xFF, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 1 if marker == 0xFF else 2
            continue
        (length,) = struct.unpack(">H", raw[i + 2 : i + 4])
        if marker in _SOF:
            height, width = struct.unpack(">HH", raw[i + 5 : i + 9])
            return width, height
        i += 2 + length
    raise CompressedImageError(f"{what}: no JPEG frame header (SOF) found; truncated or corrupt", "size")


def _imdecode(buf: np.ndarray, codec: str, what: str, max_pixels: int) -> np.ndarray:
    width, height = _peek_size(buf, codec, what)
    if width <= 0 or height <= 0:
        raise CompressedImageError(f"{what} is empty ({width}x{height})", "empty")
    if width * height > max_pixels:
        raise CompressedImageError(
            f"{what} {width}x{height} has {width * height} pixels, more than max_pixels={max_pixels}; "
            "raise the 'max_pixels' parameter or downscale the camera",
            "too_large",
        )
    tail = buf[-16:].tobytes()
    # A truncated JPEG still decodes (grey rows): its end-of-image marker is what is missing.
    if (codec == "jpeg" and _JPEG_END not in tail.rstrip(b"\0")[-2:]) or (
        codec == "png" and not tail.endswith(_PNG_END)
    ):
        raise CompressedImageError(
            f"{what} ({buf.size} bytes) is truncated: no {'JPEG end-of-image marker' if codec == 'jpeg' else 'PNG IEND chunk'}",
            "size",
        )
    image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if image is None or image.shape[:2] != (height, width):
        raise CompressedImageError(
            f"{what} ({buf.size} bytes) could not be decoded: corrupt {codec.upper()} data", "size"
        )
    return image


def _bits(image: np.ndarray) -> int:
    return 8 * image.dtype.itemsize


def decode_compressed(msg: Any, modality: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Decode a ``<topic>/compressed`` message (JPEG/PNG) for ``modality``.

    rgb gives ``rgb8`` (or ``mono8`` for a grey camera); depth and thermal give single-channel
    ``mono8``/``mono16``/``16UC1`` as declared by ``format``.

    Raises:
        CompressedImageError: see the module docstring.
    """
    if modality not in MODALITY_ENCODINGS:
        raise CompressedImageError(
            f"unknown modality '{modality}'; valid: {list(MODALITY_ENCODINGS)}", "modality"
        )
    fmt = parse_format(msg.format)
    buf = _buffer(msg.data)
    what = f"{modality} CompressedImage ({msg.format!r})"
    if buf.size == 0:
        raise CompressedImageError(f"{what} has no data", "empty")
    image = _imdecode(buf, fmt.codec, what, max_pixels)
    declared = fmt.target or fmt.source
    colour = image.ndim == 3 and image.shape[2] in (3, 4)
    if (declared and (declared in _COLOUR) != colour) or (image.ndim == 3 and not colour):
        shape = f"{image.shape[2]} channels" if image.ndim == 3 else "1 channel"
        raise CompressedImageError(
            f"{what} holds {shape} but its format declares '{declared}'; the payload does not match "
            "its format string",
            "encoding",
        )
    bits = _bits(image)
    expected_bits = _BIT_DEPTH.get(declared, 8 if fmt.codec == "jpeg" else None)
    if fmt.codec == "jpeg" and not fmt.target and fmt.source:
        expected_bits = 8  # JPEG is 8-bit whatever the source was
    if expected_bits is not None and bits != expected_bits:
        raise CompressedImageError(
            f"{what} is a {bits}-bit {fmt.codec.upper()} but its format declares {expected_bits}-bit "
            f"'{declared}'; the payload does not match its format string",
            "encoding",
        )
    if colour:
        if bits != 8:
            raise CompressedImageError(
                f"{what}: 16-bit colour is not supported; publish 8-bit colour", "encoding"
            )
        code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
        return _checked(Decoded("rgb8", cv2.cvtColor(image, code)), modality, what)
    if bits == 8:
        return _checked(Decoded("mono8", image), modality, what)
    # 16-bit single channel: keep the declared name (16UC1 depth millimetres, mono16 thermal counts)
    name = declared if declared in ("mono16", "16UC1") else ("16UC1" if modality == "depth" else "mono16")
    return _checked(Decoded(name, image), modality, what)


def _checked(decoded: Decoded, modality: str, what: str) -> Decoded:
    if decoded.encoding not in MODALITY_ENCODINGS[modality]:
        raise CompressedImageError(
            f"{what} decodes to '{decoded.encoding}', which {modality} does not accept "
            f"(supported: {', '.join(MODALITY_ENCODINGS[modality])})",
            "encoding",
        )
    return decoded


def parse_config_header(data: Any) -> tuple[int, float, float]:
    """``(format, depthQuantA, depthQuantB)`` from the first 12 bytes of a compressedDepth payload.

    Raises:
        CompressedImageError: (kind ``size``) fewer than 13 bytes (header plus any image).
    """
    buf = _buffer(data)
    if buf.size <= CONFIG_HEADER.size:
        raise CompressedImageError(
            f"compressedDepth payload has {buf.size} bytes; it must start with the {CONFIG_HEADER.size}-byte "
            "ConfigHeader followed by the PNG",
            "size",
        )
    return CONFIG_HEADER.unpack(buf[: CONFIG_HEADER.size].tobytes())


def decode_compressed_depth(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Decode a ``<topic>/compressedDepth`` message: ``16UC1`` millimetres or ``32FC1`` metres (NaN: none).

    Raises:
        CompressedImageError: see the module docstring.
    """
    fmt = parse_format(msg.format, depth=True)
    what = f"depth CompressedImage ({msg.format!r})"
    if fmt.codec != "png":
        raise CompressedImageError(
            f"{what}: only the png compressedDepth format is supported, not {fmt.codec}", "encoding"
        )
    if fmt.source not in ("16UC1", "32FC1"):
        raise CompressedImageError(
            f"{what}: compressedDepth carries 16UC1 or 32FC1 depth, not '{fmt.source}'", "encoding"
        )
    buf = _buffer(msg.data)
    kind, quant_a, quant_b = parse_config_header(buf)
    png = buf[CONFIG_HEADER.size :]
    if kind != INV_DEPTH:
        bare = buf[:8].tobytes() == _PNG_MAGIC
        raise CompressedImageError(
            f"{what}: ConfigHeader format is {kind}, expected {INV_DEPTH} (inverse depth)"
            + (
                "; the payload is a bare PNG without the 12-byte header: subscribe with transport 'compressed'"
                if bare
                else ""
            ),
            "encoding",
        )
    if fmt.source == "32FC1" and not (np.isfinite(quant_a) and np.isfinite(quant_b) and quant_a > 0):
        raise CompressedImageError(
            f"{what}: ConfigHeader quantisation A={quant_a} B={quant_b} cannot encode inverse depth (A must be > 0)",
            "encoding",
        )
    image = _imdecode(png, "png", what, max_pixels)
    if image.ndim != 2 or image.dtype != np.uint16:
        raise CompressedImageError(
            f"{what} holds a {_bits(image)}-bit {image.shape[2] if image.ndim == 3 else 1}-channel PNG; "
            "compressedDepth is a 16-bit single-channel PNG",
            "encoding",
        )
    if fmt.source == "16UC1":
        return Decoded("16UC1", image)
    inv = image.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.float32(quant_a) / (inv - np.float32(quant_b))
    depth[image == 0] = np.nan
    return Decoded("32FC1", depth.astype(np.float32))


def decode(msg: Any, modality: str, transport: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Decode a CompressedImage that came on ``transport`` (``compressed`` or ``compressedDepth``)."""
    if transport == "compressed":
        return decode_compressed(msg, modality, max_pixels)
    if transport == "compressedDepth":
        if modality != "depth":
            raise CompressedImageError(
                f"compressedDepth is a depth transport, not one for {modality}", "modality"
            )
        return decode_compressed_depth(msg, max_pixels)
    raise CompressedImageError(
        f"transport {transport!r} carries no CompressedImage; valid: compressed, compressedDepth", "modality"
    )


# ---------------------------------------------------------------------------------------------
# Encoding (tests, the demo's bag writer)
# ---------------------------------------------------------------------------------------------


def encode_compressed(
    array: np.ndarray, encoding: str, codec: str = "jpeg", quality: int = 90
) -> tuple[str, bytes]:
    """``(format, data)`` of ``array`` (laid out as a raw Image of ``encoding``) as compressed_image_transport writes it.

    Colour is stored BGR (target ``bgr8``); JPEG of a 16-bit image is scaled to ``mono8`` first
    (as cv_bridge does: value / 256); PNG keeps 16 bits (target = the encoding).
    """
    if codec not in ("jpeg", "png"):
        raise ValueError(f"codec must be 'jpeg' or 'png', got {codec!r}")
    arr = np.ascontiguousarray(array)
    if encoding in _COLOUR:
        channels = {"rgb8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGBA2BGR, "bgra8": cv2.COLOR_BGRA2BGR}
        image = cv2.cvtColor(arr, channels[encoding]) if encoding in channels else arr
        target = "bgr8"
    elif encoding in ("mono8", "8UC1"):
        image, target = arr, "mono8"
    elif encoding in ("mono16", "16UC1"):
        if codec == "jpeg":
            image, target = (arr >> 8).astype(np.uint8), "mono8"
        else:
            image, target = arr.astype(np.uint16), encoding
    else:
        raise ValueError(
            f"compressed transport cannot carry {encoding!r}; use compressedDepth for 32FC1 depth"
        )
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if codec == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, data = cv2.imencode(".jpg" if codec == "jpeg" else ".png", image, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {encoding} image as {codec}")
    return f"{encoding}; {codec} compressed {target}", data.tobytes()


def encode_compressed_depth(
    array: np.ndarray,
    encoding: str,
    depth_max: float = DEFAULT_DEPTH_MAX,
    depth_quantization: float = DEFAULT_DEPTH_QUANTIZATION,
    png_level: int = 1,
) -> tuple[str, bytes]:
    """``(format, data)`` of a 16UC1 (mm) or 32FC1 (m) depth image as compressed_depth_image_transport writes it."""
    arr = np.asarray(array)
    if encoding == "16UC1":
        image = arr.astype(np.uint16, copy=True)
        image[image > np.uint16(min(65535, int(depth_max * 1000.0)))] = 0
        header = CONFIG_HEADER.pack(INV_DEPTH, 0.0, 0.0)
    elif encoding == "32FC1":
        z0 = np.float32(depth_quantization)
        quant_a = np.float32(z0 * (z0 + np.float32(1.0)))
        quant_b = np.float32(np.float32(1.0) - quant_a / np.float32(depth_max))
        depth = arr.astype(np.float32)
        valid = np.isfinite(depth) & (depth > 0) & (depth < np.float32(depth_max))
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.where(valid, quant_a / depth + quant_b, 0.0)
        image = np.clip(inv, 0, 65535).astype(np.uint16)  # truncation, as the C++ float -> ushort
        header = CONFIG_HEADER.pack(INV_DEPTH, float(quant_a), float(quant_b))
    else:
        raise ValueError(f"compressedDepth carries 16UC1 or 32FC1 depth, not {encoding!r}")
    ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)])
    if not ok:
        raise ValueError("OpenCV could not encode the depth PNG")
    return f"{encoding}; compressedDepth png", header + data.tobytes()
