"""The node's view of the CompressedImage codec (:mod:`damcseg_core.data.compressed_image`).

Same functions, but every bad payload raises :class:`~damcseg_ros.conversions.ImageConversionError`
with the codec's kind (``encoding``, ``size``, ``empty``, ``too_large``: all in
``conversions.INVALID_KINDS``), so the node counts and reports compressed inputs like raw ones.
No rclpy import: unit-testable anywhere.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from damcseg_core.data import compressed_image as _codec
from damcseg_core.data.compressed_image import (
    CONFIG_HEADER,
    DEFAULT_DEPTH_MAX,
    DEFAULT_DEPTH_QUANTIZATION,
    INV_DEPTH,
    TRANSPORTS,
    CompressedFormat,
    CompressedImageError,
    Decoded,
    encode_compressed,
    encode_compressed_depth,
    transport_topic,
)
from damcseg_ros.conversions import ImageConversionError

__all__ = [
    "CONFIG_HEADER",
    "DEFAULT_DEPTH_MAX",
    "DEFAULT_DEPTH_QUANTIZATION",
    "INV_DEPTH",
    "TRANSPORTS",
    "CompressedFormat",
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

F = TypeVar("F", bound=Callable[..., Any])


def _conversion_errors(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CompressedImageError as exc:
            raise ImageConversionError(str(exc), exc.kind) from exc

    return wrapper  # type: ignore[return-value]


decode = _conversion_errors(_codec.decode)
decode_compressed = _conversion_errors(_codec.decode_compressed)
decode_compressed_depth = _conversion_errors(_codec.decode_compressed_depth)
parse_config_header = _conversion_errors(_codec.parse_config_header)
parse_format = _conversion_errors(_codec.parse_format)
