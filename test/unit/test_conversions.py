"""Image message <-> numpy: values per encoding, padding, byte order, and every rejection."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from damcseg_ros.conversions import (
    ImageConversionError,
    array_to_image,
    blank_value,
    depth_from_image,
    image_to_array,
    rgb_from_image,
    thermal_from_image,
    to_modality,
)


@dataclasses.dataclass
class FakeImage:
    """The sensor_msgs/Image fields the conversions read (keeps these tests ROS-free)."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: bytes


def make(array: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> FakeImage:
    """Pack ``array`` like a publisher would: optional row padding bytes and byte order."""
    arr = np.ascontiguousarray(array)
    arr = arr.astype(arr.dtype.newbyteorder(">" if bigendian else "<"))
    h, w = arr.shape[:2]
    row = arr.reshape(h, -1).view(np.uint8).reshape(h, -1)
    rows = np.concatenate([row, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    return FakeImage(h, w, encoding, int(bigendian), rows.shape[1], rows.tobytes())


RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
ALPHA = RNG.integers(0, 256, (5, 7, 1), dtype=np.uint8)
MONO8 = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
MONO16 = RNG.integers(0, 65536, (5, 7), dtype=np.uint16)


@pytest.mark.parametrize(
    ("encoding", "array"),
    [
        ("rgb8", RGB),
        ("bgr8", RGB[..., ::-1]),
        ("rgba8", np.concatenate([RGB, ALPHA], axis=2)),
        ("bgra8", np.concatenate([RGB[..., ::-1], ALPHA], axis=2)),
    ],
)
@pytest.mark.parametrize("pad", [0, 3])
def test_rgb_encodings_give_rgb_order(encoding, array, pad):
    out = rgb_from_image(make(array, encoding, pad=pad))
    assert out.shape == (5, 7, 3)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, RGB)


def test_mono8_rgb_is_replicated_to_three_channels():
    out = rgb_from_image(make(MONO8, "mono8"))
    assert out.shape == (5, 7, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], MONO8)


def test_rgb8_is_zero_copy_view_of_message_data():
    msg = make(RGB, "rgb8", pad=2)
    out = rgb_from_image(msg)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))
    assert not out.flags.writeable


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 4])
def test_depth_16uc1_millimetres_to_metres(bigendian, pad):
    mm = np.array([[0, 1, 1500], [65535, 250, 10000]], dtype=np.uint16)
    out = depth_from_image(make(mm, "16UC1", pad=pad, bigendian=bigendian))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 0.001, 1.5], [65.535, 0.25, 10.0]], rtol=1e-6)


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 8])
def test_depth_32fc1_metres_with_invalid_values_zeroed(bigendian, pad):
    m = np.array([[1.25, np.nan, np.inf], [-2.0, 0.0, 80.5]], dtype=np.float32)
    out = depth_from_image(make(m, "32FC1", pad=pad, bigendian=bigendian))
    np.testing.assert_array_equal(out, np.array([[1.25, 0, 0], [0, 0, 80.5]], dtype=np.float32))
    assert out.dtype == np.dtype(np.float32)  # native order, usable by torch


@pytest.mark.parametrize(
    ("encoding", "array", "full_scale"),
    [("mono8", MONO8, 255.0), ("mono16", MONO16, 65535.0), ("16UC1", MONO16, 65535.0)],
)
@pytest.mark.parametrize("bigendian", [False, True])
def test_thermal_full_scale_normalisation(encoding, array, full_scale, bigendian):
    out = thermal_from_image(make(array, encoding, pad=1, bigendian=bigendian))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, array.astype(np.float64) / full_scale, rtol=1e-6)
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_sixteen_bit_thermal_keeps_its_resolution():
    # Field complaint: 16-bit images squashed to 8 bit. Neighbouring counts must stay distinct.
    counts = np.array([[30000, 30001]], dtype=np.uint16)
    out = thermal_from_image(make(counts, "mono16"))
    assert out[0, 1] > out[0, 0]


@pytest.mark.parametrize(
    ("modality", "encoding", "supported"),
    [
        ("rgb", "yuv422", "rgb8, bgr8, rgba8, bgra8, mono8"),
        ("rgb", "16UC1", "rgb8, bgr8, rgba8, bgra8, mono8"),
        ("depth", "mono8", "16UC1, 32FC1"),
        ("depth", "32FC3", "16UC1, 32FC1"),
        ("thermal", "rgb8", "mono8, mono16, 16UC1"),
    ],
)
def test_unsupported_encoding_names_it_and_the_supported_list(modality, encoding, supported):
    msg = FakeImage(2, 2, encoding, 0, 12, bytes(24))
    with pytest.raises(ImageConversionError) as err:
        to_modality(msg, modality)
    assert f"'{encoding}'" in str(err.value)
    assert supported in str(err.value)


@pytest.mark.parametrize(
    ("height", "width", "step", "size", "expected"),
    [
        (4, 5, 15, 59, "59 bytes but height*step = 4*15 = 60"),  # short
        (4, 5, 15, 61, "61 bytes but height*step = 4*15 = 60"),  # trailing bytes: rejected too
        (4, 5, 14, 56, "step 14 is smaller than width*bytes_per_pixel = 15"),
        (0, 5, 15, 0, "empty (5x0)"),
        (4, 0, 15, 60, "empty (0x4)"),
        (5000, 4000, 12000, 0, "20000000 pixels, more than max_pixels=16000000"),
    ],
)
def test_inconsistent_headers_are_rejected_with_the_reason(height, width, step, size, expected):
    msg = FakeImage(height, width, "rgb8", 0, step, bytes(size))
    with pytest.raises(ImageConversionError, match="rgb image") as err:
        rgb_from_image(msg)
    assert expected in str(err.value)


def test_huge_image_rejected_before_reading_data():
    # Data is deliberately absent: the size check must fire before the payload is touched.
    msg = FakeImage(100_000, 100_000, "mono8", 0, 100_000, b"")
    with pytest.raises(ImageConversionError, match="max_pixels=1000"):
        thermal_from_image(msg, max_pixels=1000)


@pytest.mark.parametrize(
    ("encoding", "array"),
    [("rgb8", RGB), ("mono8", MONO8), ("16UC1", MONO16), ("32FC1", RNG.random((5, 7), dtype=np.float32))],
)
def test_array_to_image_round_trip(encoding, array):
    pytest.importorskip("sensor_msgs.msg")
    msg = array_to_image(array, encoding)
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian) == (5, 7, encoding, 0)
    assert msg.step * msg.height == len(msg.data)
    modality = "rgb" if array.ndim == 3 else "depth" if encoding in ("16UC1", "32FC1") else "thermal"
    np.testing.assert_array_equal(image_to_array(msg, modality), array)


def test_array_to_image_rejects_mismatched_array():
    pytest.importorskip("sensor_msgs.msg")
    with pytest.raises(ImageConversionError, match="does not fit encoding 'rgb8'"):
        array_to_image(MONO8, "rgb8")


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.zeros((4, 6), np.float32), (0.0,)),  # a black thermal or an all-invalid depth frame
        (np.full((4, 6, 3), (255, 0, 0), np.uint8), (255.0, 0.0, 0.0)),  # one colour everywhere
        (np.full((4, 6, 3), 128, np.uint8), (128.0, 128.0, 128.0)),
        (np.zeros((0, 6), np.float32), None),  # empty: not blank, refused elsewhere
    ],
)
def test_blank_value_is_the_one_value_of_a_frame_without_variation(array, expected):
    assert blank_value(array) == expected


@pytest.mark.parametrize("modality", ["rgb", "thermal"])
def test_a_dark_noisy_frame_or_one_differing_pixel_is_not_blank(modality):
    rng = np.random.default_rng(0)
    shape = (32, 48, 3) if modality == "rgb" else (32, 48)
    night = rng.integers(0, 3, shape).astype(np.uint8)  # sensor noise at 0-2 counts
    assert blank_value(night) is None
    one_off = np.zeros(shape, np.uint8)
    one_off[-1, -1] = 1
    assert blank_value(one_off) is None
