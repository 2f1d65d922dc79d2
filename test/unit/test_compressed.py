"""damcseg_ros.compressed: image_transport's compressed and compressedDepth payloads, without ROS."""

from __future__ import annotations

import struct
import types

import cv2
import numpy as np
import pytest

from damcseg_ros.compressed import (
    CONFIG_HEADER,
    decode,
    decode_compressed,
    decode_compressed_depth,
    encode_compressed,
    encode_compressed_depth,
    parse_config_header,
    parse_format,
    transport_topic,
)
from damcseg_ros.conversions import INVALID_KINDS, ImageConversionError

H, W = 48, 64
RNG = np.random.default_rng(7)


def msg(fmt: str, data: bytes) -> types.SimpleNamespace:
    return types.SimpleNamespace(format=fmt, data=data)


def smooth_rgb() -> np.ndarray:
    """A gradient image (JPEG-friendly: small error at quality 95)."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)


def depth_m() -> np.ndarray:
    d = np.tile(np.linspace(0.5, 9.5, W, dtype=np.float32), (H, 1))
    d[0, :4] = [np.nan, 0.0, -1.0, 12.0]  # no return, zero, negative, beyond depth_max
    return d


@pytest.mark.parametrize(
    ("text", "depth", "expected"),
    [
        ("rgb8; jpeg compressed bgr8", False, ("rgb8", "jpeg", "bgr8", False)),
        ("mono16; png compressed", False, ("mono16", "png", "", False)),
        ("mono16; png compressed mono16", False, ("mono16", "png", "mono16", False)),
        ("mono16; jpeg compressed mono8", False, ("mono16", "jpeg", "mono8", False)),
        ("jpeg", False, ("", "jpeg", "", False)),
        ("png", False, ("", "png", "", False)),
        ("16UC1; compressedDepth png", True, ("16UC1", "png", "16UC1", True)),
        ("32FC1; compressedDepth", True, ("32FC1", "png", "32FC1", True)),
        ("16UC1", True, ("16UC1", "png", "16UC1", True)),
    ],
)
def test_parse_format_as_image_transport_writes_it(text, depth, expected):
    fmt = parse_format(text, depth=depth)
    assert (fmt.source, fmt.codec, fmt.target, fmt.depth) == expected


@pytest.mark.parametrize(
    ("text", "depth"),
    [("rgb8; webp compressed bgr8", False), ("bmp", False), ("16UC1; png", True), ("", False)],
)
def test_unknown_formats_are_encoding_errors(text, depth):
    with pytest.raises(ImageConversionError) as err:
        parse_format(text, depth=depth)
    assert err.value.kind == "encoding" and repr(text) in str(err.value)


@pytest.mark.parametrize(
    ("array", "encoding", "codec", "modality", "expected_encoding", "tolerance"),
    [
        (smooth_rgb(), "rgb8", "jpeg", "rgb", "rgb8", 6),
        (smooth_rgb(), "rgb8", "png", "rgb", "rgb8", 0),
        (smooth_rgb()[..., ::-1].copy(), "bgr8", "png", "rgb", "rgb8", 0),
        (np.dstack([smooth_rgb(), np.full((H, W), 200, np.uint8)]), "rgba8", "png", "rgb", "rgb8", 0),
        (smooth_rgb()[..., 0].copy(), "mono8", "jpeg", "thermal", "mono8", 6),
        (smooth_rgb()[..., 0].copy(), "mono8", "png", "rgb", "mono8", 0),
        (RNG.integers(0, 65535, (H, W), dtype=np.uint16), "mono16", "png", "thermal", "mono16", 0),
        (RNG.integers(0, 65535, (H, W), dtype=np.uint16), "16UC1", "png", "depth", "16UC1", 0),
    ],
)
def test_compressed_round_trip(array, encoding, codec, modality, expected_encoding, tolerance):
    fmt, data = encode_compressed(array, encoding, codec, quality=95)
    decoded = decode_compressed(msg(fmt, data), modality)
    assert decoded.encoding == expected_encoding
    want = array
    if encoding == "bgr8":
        want = array[..., ::-1]
    elif encoding == "rgba8":
        want = array[..., :3]
    assert decoded.array.shape == want.shape and decoded.array.dtype == want.dtype
    assert np.abs(decoded.array.astype(np.int64) - want.astype(np.int64)).mean() <= tolerance
    if tolerance == 0:
        np.testing.assert_array_equal(decoded.array, want)


def test_jpeg_of_mono16_is_scaled_to_mono8_and_says_so():
    counts = np.tile(np.linspace(0, 65535, W).astype(np.uint16), (H, 1))
    fmt, data = encode_compressed(counts, "mono16", "jpeg", quality=95)
    assert fmt == "mono16; jpeg compressed mono8"
    decoded = decode_compressed(msg(fmt, data), "thermal")
    assert decoded.encoding == "mono8"
    assert np.abs(decoded.array.astype(int) - (counts >> 8).astype(int)).mean() < 3


def test_rgb_format_string_names_source_and_bgr_target():
    fmt, data = encode_compressed(smooth_rgb(), "rgb8", "jpeg")
    assert fmt == "rgb8; jpeg compressed bgr8"
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"


def test_truncated_jpeg_is_a_size_error_not_a_grey_image():
    fmt, data = encode_compressed(smooth_rgb(), "rgb8", "jpeg")
    with pytest.raises(ImageConversionError) as err:
        decode_compressed(msg(fmt, data[: len(data) * 2 // 3]), "rgb")
    assert err.value.kind == "size" and "truncated" in str(err.value)


def test_corrupt_jpeg_body_is_a_size_error():
    fmt, data = encode_compressed(smooth_rgb(), "rgb8", "jpeg")
    sof = data.index(b"\xff\xc0")
    garbage = data[: sof + 20] + bytes(RNG.integers(0, 255, 200, dtype=np.uint8)) + b"\xff\xd9"
    with pytest.raises(ImageConversionError) as err:
        decode_compressed(msg(fmt, garbage), "rgb")
    assert err.value.kind == "size"


def test_png_of_the_wrong_bit_depth_is_an_encoding_error():
    _ok, png8 = cv2.imencode(".png", np.full((H, W), 9, np.uint8))
    with pytest.raises(ImageConversionError) as err:
        decode_compressed(msg("mono16; png compressed", png8.tobytes()), "thermal")
    assert err.value.kind == "encoding"
    assert "8-bit PNG but its format declares 16-bit 'mono16'" in str(err.value)


def test_colour_payload_on_a_mono_format_is_an_encoding_error():
    _fmt, data = encode_compressed(smooth_rgb(), "rgb8", "png")
    with pytest.raises(ImageConversionError, match="holds 3 channels but its format declares 'mono8'"):
        decode_compressed(msg("mono8; png compressed mono8", data), "thermal")


def test_colour_on_the_thermal_topic_is_refused_for_the_modality():
    fmt, data = encode_compressed(smooth_rgb(), "rgb8", "jpeg")
    with pytest.raises(ImageConversionError, match="decodes to 'rgb8', which thermal does not accept"):
        decode_compressed(msg(fmt, data), "thermal")


def test_too_many_pixels_are_refused_before_decoding():
    fmt, data = encode_compressed(smooth_rgb(), "rgb8", "png")
    with pytest.raises(ImageConversionError) as err:
        decode_compressed(msg(fmt, data), "rgb", max_pixels=H * W - 1)
    assert err.value.kind == "too_large" and f"{W}x{H}" in str(err.value)


def test_empty_payload_is_an_empty_error():
    with pytest.raises(ImageConversionError) as err:
        decode_compressed(msg("rgb8; jpeg compressed bgr8", b""), "rgb")
    assert err.value.kind == "empty"


def test_compressed_depth_header_is_parsed_byte_exactly():
    data = struct.pack("<i", 0) + struct.pack("<f", 10100.0) + struct.pack("<f", -1009.0) + b"\x89PNG"
    assert data[:12].hex() == "00000000" + "00d01d46" + "00407cc4"
    assert parse_config_header(data) == (0, 10100.0, -1009.0)
    assert CONFIG_HEADER.size == 12


def test_32fc1_encoder_writes_the_upstream_quantisation_parameters():
    fmt, data = encode_compressed_depth(depth_m(), "32FC1", depth_max=10.0, depth_quantization=100.0)
    assert fmt == "32FC1; compressedDepth png"
    # A = z0 * (z0 + 1) = 10100, B = 1 - A / depth_max = -1009 (float32)
    assert data[:12] == struct.pack("<iff", 0, 10100.0, -1009.0)
    assert data[12:20] == b"\x89PNG\r\n\x1a\n"
    inv = cv2.imdecode(np.frombuffer(data[12:], np.uint8), cv2.IMREAD_UNCHANGED)
    assert inv.dtype == np.uint16
    # q = A / d + B, truncated: d = 0.5 m -> 20200 - 1009 = 19191
    assert inv[1, 0] == 19191
    assert list(inv[0, :4]) == [0, 0, 0, 0]  # NaN, 0, negative and beyond depth_max: no value


def test_32fc1_inverse_depth_round_trip_within_the_quantisation_step():
    depth = depth_m()
    fmt, data = encode_compressed_depth(depth, "32FC1")
    decoded = decode_compressed_depth(msg(fmt, data))
    assert decoded.encoding == "32FC1" and decoded.array.dtype == np.float32
    assert np.isnan(decoded.array[0, :4]).all()
    valid = np.isfinite(depth) & (depth > 0) & (depth < 10.0)
    valid[0, :4] = False
    d = depth[valid]
    step = d**2 / (10100.0 - d)  # one quantisation level at depth d: A / (A/d - 1) - d
    assert (np.abs(decoded.array[valid] - depth[valid]) <= step + 1e-4).all()


def test_32fc1_decoding_follows_the_header_parameters():
    inv = np.array([[0, 1, 2, 65535]], np.uint16)
    _ok, png = cv2.imencode(".png", inv)
    data = struct.pack("<iff", 0, 50.0, -4.0) + png.tobytes()
    decoded = decode_compressed_depth(msg("32FC1; compressedDepth png", data))
    np.testing.assert_allclose(decoded.array[0, 1:], [50.0 / 5.0, 50.0 / 6.0, 50.0 / 65539.0], rtol=1e-6)
    assert np.isnan(decoded.array[0, 0])


def test_16uc1_compressed_depth_round_trip_drops_readings_beyond_depth_max():
    mm = RNG.integers(1, 12000, (H, W), dtype=np.uint16)
    fmt, data = encode_compressed_depth(mm, "16UC1", depth_max=10.0)
    assert fmt == "16UC1; compressedDepth png" and data[:12] == struct.pack("<iff", 0, 0.0, 0.0)
    decoded = decode(msg(fmt, data), "depth", "compressedDepth")
    assert decoded.encoding == "16UC1"
    np.testing.assert_array_equal(decoded.array, np.where(mm > 10000, 0, mm))


@pytest.mark.parametrize(
    ("mutate", "kind", "text"),
    [
        (lambda d: d[:12], "size", "must start with the 12-byte ConfigHeader"),
        (lambda d: struct.pack("<iff", 3, 10100.0, -1009.0) + d[12:], "encoding", "ConfigHeader format is 3"),
        (lambda d: d[12:], "encoding", "bare PNG without the 12-byte header"),
        (lambda d: struct.pack("<iff", 0, 0.0, 1.0) + d[12:], "encoding", "A must be > 0"),
        (lambda d: d[:-30], "size", "truncated"),
    ],
)
def test_bad_compressed_depth_payloads(mutate, kind, text):
    fmt, data = encode_compressed_depth(depth_m(), "32FC1")
    with pytest.raises(ImageConversionError) as err:
        decode_compressed_depth(msg(fmt, mutate(data)))
    assert err.value.kind == kind and text in str(err.value)


def test_8_bit_png_behind_a_depth_header_is_an_encoding_error():
    _ok, png8 = cv2.imencode(".png", np.full((H, W), 3, np.uint8))
    with pytest.raises(ImageConversionError, match="8-bit 1-channel PNG; compressedDepth is a 16-bit"):
        decode_compressed_depth(
            msg("16UC1; compressedDepth png", struct.pack("<iff", 0, 0, 0) + png8.tobytes())
        )


def test_rvl_is_refused_with_the_reason():
    with pytest.raises(
        ImageConversionError, match="only the png compressedDepth format is supported, not rvl"
    ):
        decode_compressed_depth(msg("16UC1; compressedDepth rvl", b"\0" * 40))


def test_every_error_kind_is_one_the_node_counts():
    kinds = {"encoding", "size", "empty", "too_large"}
    assert kinds <= set(INVALID_KINDS)


@pytest.mark.parametrize(
    ("topic", "transport", "expected"),
    [
        ("rgb/image", "raw", "rgb/image"),
        ("rgb/image", "compressed", "rgb/image/compressed"),
        ("/camera/depth/image_raw", "compressedDepth", "/camera/depth/image_raw/compressedDepth"),
    ],
)
def test_transport_topic(topic, transport, expected):
    assert transport_topic(topic, transport) == expected


def test_transport_topic_rejects_unknown_transports():
    with pytest.raises(
        ValueError, match=r"transport must be one of \['raw', 'compressed', 'compressedDepth'\]"
    ):
        transport_topic("rgb/image", "theora")


def test_module_imports_no_ros():
    import subprocess
    import sys

    code = "import sys, damcseg_ros.compressed; print(sorted(m for m in ('rclpy', 'sensor_msgs') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
