"""Every pixel mode Pillow opens becomes the right 8-bit RGB (hawk_cli/io/images.py), checked per mode against a
reference conversion written here from the formulas (NumPy, not Pillow's converters), on random pixels."""

from __future__ import annotations

import colorsys
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from hawk_cli.errors import InputError
from hawk_cli.io.images import BACKGROUND, load_image, to_rgb

PROFILE = settings(
    max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
WHITE = np.array(BACKGROUND, dtype=np.float64)


def shapes():
    return st.tuples(st.integers(1, 5), st.integers(1, 5))


def u8(channels: int | None = None):
    return shapes().flatmap(lambda hw: arrays(np.uint8, hw + ((channels,) if channels else ())))


def _round_trip(image: Image.Image, tmp_path, fmt: str, **options) -> np.ndarray:
    path = tmp_path / f"image.{fmt.lower()}"
    image.save(path, format=fmt, **options)
    with Image.open(path) as reopened:
        mode = reopened.mode
    result = np.asarray(load_image(path), dtype=np.int64)
    assert result.ndim == 3 and result.shape[2] == 3, mode
    return result


def _grey_rgb(values: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(values, dtype=np.int64)[..., None], 3, axis=2)


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / 255.0
    return np.rint(rgb.astype(np.float64) * a + WHITE * (1 - a)).astype(np.int64)


@PROFILE
@given(values=u8())
def test_greyscale_l(tmp_path, values):
    assert np.array_equal(_round_trip(Image.fromarray(values, "L"), tmp_path, "PNG"), _grey_rgb(values))


@PROFILE
@given(bits=shapes().flatmap(lambda hw: arrays(np.bool_, hw)))
def test_bilevel_1(tmp_path, bits):
    image = Image.fromarray(bits.astype(np.uint8) * 255, "L").convert("1")
    assert np.array_equal(_round_trip(image, tmp_path, "PNG"), _grey_rgb(bits * 255))


@PROFILE
@given(values=shapes().flatmap(lambda hw: arrays(np.uint16, hw)))
def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path, values):
    image = Image.fromarray(values)  # I;16, written as a 16-bit PNG
    assert np.array_equal(_round_trip(image, tmp_path, "PNG"), _grey_rgb(np.rint(values / 257.0)))


@PROFILE
@given(values=shapes().flatmap(lambda hw: arrays(np.uint16, hw)))
def test_sixteen_bit_big_endian_and_plain_i_modes(values):
    big = Image.frombytes("I;16B", values.shape[::-1], values.astype(">u2").tobytes())
    plain = Image.fromarray(values.astype(np.int32), "I")  # e.g. what older Pillow opens 16-bit PNGs as
    expected = _grey_rgb(np.rint(values / 257.0))
    assert np.array_equal(np.asarray(to_rgb(big), dtype=np.int64), expected)
    assert np.array_equal(np.asarray(to_rgb(plain), dtype=np.int64), expected)


def test_thirty_two_bit_integer_tiff_is_refused(tmp_path):
    Image.fromarray(np.arange(16, dtype=np.int32).reshape(4, 4) * 100000, "I").save(tmp_path / "deep.tif")
    with pytest.raises(InputError, match="holds 32-bit integer pixels"):
        load_image(tmp_path / "deep.tif")


@PROFILE
@given(values=shapes().flatmap(lambda hw: arrays(np.float32, hw, elements=st.floats(0, 1, width=32))))
def test_float_images_are_read_as_zero_to_one(tmp_path, values):
    result = _round_trip(Image.fromarray(values, "F"), tmp_path, "TIFF")
    assert np.array_equal(result, _grey_rgb(np.floor(values.astype(np.float64) * 255 + 0.5)))


@pytest.mark.parametrize(
    "bad, message", [(2.0, "from 0 to 2"), (-0.5, "from -0.5 to 0"), (float("nan"), "NaN pixel values")]
)
def test_float_images_outside_zero_to_one_are_refused(tmp_path, bad, message):
    values = np.zeros((2, 2), dtype=np.float32)
    values[1, 1] = bad
    Image.fromarray(values, "F").save(tmp_path / "f.tif")
    with pytest.raises(InputError, match=message):
        load_image(tmp_path / "f.tif")


@PROFILE
@given(pixels=u8(4))
def test_rgba_is_composited_over_white(tmp_path, pixels):
    result = _round_trip(Image.fromarray(pixels, "RGBA"), tmp_path, "PNG")
    assert np.abs(result - _over_white(pixels[..., :3], pixels[..., 3])).max() <= 1


@PROFILE
@given(pixels=u8(2))
def test_la_is_composited_over_white(tmp_path, pixels):
    result = _round_trip(Image.fromarray(pixels, "LA"), tmp_path, "PNG")
    assert np.abs(result - _over_white(_grey_rgb(pixels[..., 0]), pixels[..., 1])).max() <= 1


@PROFILE
@given(pixels=u8(4))
def test_premultiplied_rgba(pixels):
    alpha = pixels[..., 3:4].astype(np.int64)
    premultiplied = np.minimum(pixels[..., :3], alpha).astype(np.uint8)  # valid premultiplied colours
    image = Image.frombytes("RGBa", pixels.shape[1::-1], np.concatenate([premultiplied, pixels[..., 3:]], 2).tobytes())
    expected = premultiplied.astype(np.int64) + (255 - alpha)  # c*a + white*(1-a), with c*a stored
    assert np.abs(np.asarray(to_rgb(image), dtype=np.int64) - expected).max() <= 2


@PROFILE
@given(data=st.data())
def test_palette_with_and_without_a_transparent_index(tmp_path, data):
    colours = data.draw(arrays(np.uint8, (8, 3)))
    indices = data.draw(shapes().flatmap(lambda hw: arrays(np.uint8, hw, elements=st.integers(0, 7))))
    image = Image.fromarray(indices, "P")
    image.putpalette(colours.flatten().tolist())
    plain = _round_trip(image, tmp_path, "PNG")
    assert np.array_equal(plain, colours[indices].astype(np.int64))
    transparent = data.draw(st.integers(0, 7))
    keyed = _round_trip(image, tmp_path, "PNG", transparency=transparent)
    expected = np.where((indices == transparent)[..., None], WHITE.astype(np.int64), colours[indices])
    assert np.array_equal(keyed, expected)


@PROFILE
@given(pixels=u8(4))
def test_cmyk(tmp_path, pixels):
    c, m, y, k = (pixels[..., i].astype(np.float64) for i in range(4))
    expected = np.stack([(255 - c) * (255 - k), (255 - m) * (255 - k), (255 - y) * (255 - k)], axis=-1) / 255
    result = _round_trip(Image.fromarray(pixels, "CMYK"), tmp_path, "TIFF")
    assert np.abs(result - expected).max() <= 1


@PROFILE
@given(pixels=u8(3))
def test_ycbcr_uses_the_jpeg_full_range_formulas(pixels):
    y, cb, cr = (pixels[..., i].astype(np.float64) for i in range(3))
    expected = np.stack(
        [y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128), y + 1.772 * (cb - 128)], axis=-1
    ).clip(0, 255)
    image = Image.frombytes("YCbCr", pixels.shape[1::-1], pixels.tobytes())
    assert np.abs(np.asarray(to_rgb(image), dtype=np.float64) - expected).max() <= 1.5


@PROFILE
@given(pixels=u8(3))
def test_hsv(pixels):
    expected = np.array([[colorsys.hsv_to_rgb(*(v / 255.0 for v in px)) for px in row] for row in pixels]) * 255
    image = Image.frombytes("HSV", pixels.shape[1::-1], pixels.tobytes())
    assert np.abs(np.asarray(to_rgb(image), dtype=np.float64) - expected).max() <= 1.5


@PROFILE
@given(lightness=shapes().flatmap(lambda hw: arrays(np.uint8, hw)))
def test_lab_greys_follow_the_cie_lightness_curve(lightness):
    """Neutral Lab colours (a = b = 0; Pillow stores a and b as signed bytes) are the same grey under any white
    point: sRGB from L* by the CIE and sRGB formulas."""
    lab = np.stack([lightness, np.zeros_like(lightness), np.zeros_like(lightness)], axis=-1)
    l_star = lightness.astype(np.float64) * 100 / 255
    luminance = np.where(l_star > 8, ((l_star + 16) / 116) ** 3, l_star / 903.3)
    srgb = np.where(luminance <= 0.0031308, 12.92 * luminance, 1.055 * luminance ** (1 / 2.4) - 0.055) * 255
    image = Image.frombytes("LAB", lightness.shape[::-1], lab.tobytes())
    result = np.asarray(to_rgb(image), dtype=np.float64)
    assert np.abs(result - srgb[..., None]).max() <= 2


@PROFILE
@given(pixels=u8(4))
def test_rgbx_drops_the_padding_channel(pixels):
    image = Image.frombytes("RGBX", pixels.shape[1::-1], pixels.tobytes())
    assert np.array_equal(np.asarray(to_rgb(image)), pixels[..., :3])


# EXIF orientation tag -> the transform that makes the stored pixels upright (EXIF 2.32, tag 0x0112).
ORIENTATIONS = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_is_applied(tmp_path, orientation):
    stored = np.random.default_rng(orientation).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    result = _round_trip(Image.fromarray(stored, "RGB"), tmp_path, "PNG", exif=exif.tobytes())
    assert np.array_equal(result, ORIENTATIONS[orientation](stored))


def test_the_references_can_fail():
    """Negative control: Pillow's own clipping conversion of 16-bit grey (what hawk did before) is caught."""
    values = np.array([[0, 1000, 40000, 65535]], dtype=np.uint16)
    clipped = np.asarray(Image.fromarray(values).convert("RGB"), dtype=np.int64)
    assert not np.array_equal(clipped, _grey_rgb(np.rint(values / 257.0)))
    dropped = np.asarray(Image.fromarray(np.array([[[10, 20, 30, 0]]], dtype=np.uint8), "RGBA").convert("RGB"))
    assert not np.array_equal(dropped, _over_white(np.array([[[10, 20, 30]]]), np.array([[0]])))


def test_every_mode_pillow_knows_is_converted_or_refused_in_one_line():
    for mode in Image.MODES:
        image = Image.new(mode, (3, 2))
        try:
            converted = to_rgb(image)
        except InputError as error:
            assert "\n" not in error.render()
        else:
            assert converted.mode == "RGB" and converted.size == (3, 2), mode


def test_png_bytes_round_trip_helper_sees_sixteen_bits():
    """The 16-bit PNG written above really is 16-bit (else the scaling test would test nothing)."""
    buffer = io.BytesIO()
    Image.fromarray(np.array([[0, 65535]], dtype=np.uint16)).save(buffer, format="PNG")
    buffer.seek(0)
    assert Image.open(buffer).mode.startswith("I")
