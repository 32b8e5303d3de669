"""`vqa.data.images.to_rgb`: every image mode PIL opens becomes faithful 8-bit RGB (not `convert("RGB")`, which
clips 16-bit greyscale at 255). Each test writes a real file in that mode (or builds the image in memory where PIL
opens no file in that mode), converts it, and compares with a reference computed here with numpy from the source
pixels."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqa.data.images import BACKGROUND, to_rgb
from vqa.model.processing import VQACollator, VQAProcessor

RNG = np.random.default_rng(0)


def reopened(image: Image.Image, path: Path) -> Image.Image:
    """`image` written to `path` and opened again, checked to keep its mode (what a user's file gives)."""
    image.save(path)
    opened = Image.open(path)
    assert opened.mode == image.mode, f"{path.suffix} reopened as {opened.mode}"
    return opened


def rgb_of(image: Image.Image) -> np.ndarray:
    converted = to_rgb(image)
    assert converted.mode == "RGB" and converted.size == image.size
    return np.asarray(converted).astype(np.int64)  # (H, W, 3)


def grey(values: np.ndarray) -> np.ndarray:
    """(H, W) -> (H, W, 3): the same value in every channel."""
    return np.repeat(values[..., None], 3, axis=2).astype(np.int64)


def composited(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(H, W, 3) colour with (H, W) alpha over the white background: round(c * a / 255 + 255 * (1 - a / 255))."""
    a = alpha[..., None].astype(np.float64) / 255
    return np.round(colour * a + np.array(BACKGROUND) * (1 - a)).astype(np.int64)


def test_16_bit_png_is_scaled_by_its_depth_not_clipped(tmp_path: Path) -> None:
    values = RNG.integers(0, 65536, (6, 7)).astype(np.uint16)
    values[0, :3] = [0, 32768, 65535]
    image = reopened(Image.fromarray(values), tmp_path / "grey16.png")
    assert image.mode == "I;16"
    expected = grey(np.round(values / 65535 * 255))
    assert np.array_equal(rgb_of(image), expected)
    assert rgb_of(image)[0, :3, 0].tolist() == [0, 128, 255]  # mid grey stays mid grey (convert gives 255)


def test_16_bit_big_endian_tiff(tmp_path: Path) -> None:
    values = RNG.integers(0, 65536, (5, 4)).astype(">u2")
    image = reopened(Image.fromarray(values), tmp_path / "grey16b.tif")
    assert image.mode == "I;16B"
    assert np.array_equal(rgb_of(image), grey(np.round(values.astype(np.float64) / 65535 * 255)))


def test_32_bit_mode_i_from_a_16_bit_pgm_is_read_as_16_bit(tmp_path: Path) -> None:
    """PIL opens a PGM with maxval 65535 as mode I: its values are 16-bit."""
    values = RNG.integers(0, 65536, (4, 5)).astype(np.uint16)
    path = tmp_path / "grey16.pgm"
    path.write_bytes(b"P5 5 4 65535\n" + values.astype(">u2").tobytes())
    image = Image.open(path)
    assert image.mode == "I"
    assert np.array_equal(rgb_of(image), grey(np.round(values / 65535 * 255)))


def test_32_bit_signed_tiff_is_scaled_by_32_bits(tmp_path: Path) -> None:
    values = RNG.integers(-(2**31), 2**31 - 1, (4, 6)).astype(np.int32)
    values[0, :2] = [2**31 - 1, 2**30]
    image = reopened(Image.fromarray(values), tmp_path / "grey32.tif")
    assert image.mode == "I"
    expected = grey(np.round(np.clip(values.astype(np.float64), 0, None) / (2**31 - 1) * 255))  # negatives black
    assert np.array_equal(rgb_of(image), expected)
    assert rgb_of(image)[0, :2, 0].tolist() == [255, 128]


@pytest.mark.parametrize("scale", [1.0, 255.0], ids=["unit-range", "0-255-range"])
def test_float_tiff(tmp_path: Path, scale: float) -> None:
    """Values in [0, 1] are scaled by 255; any other range is read on PIL's 0..255 scale and clipped."""
    values = (RNG.random((5, 5)) * scale).astype(np.float32)
    values[0, 0] = 1.0 if scale == 1.0 else 300.0  # out of 0..255: clipped to white
    image = reopened(Image.fromarray(values), tmp_path / "float.tif")
    assert image.mode == "F"
    factor = 255 if scale == 1.0 else 1
    assert np.array_equal(rgb_of(image), grey(np.clip(np.round(values.astype(np.float64) * factor), 0, 255)))


def palette_image(mode: str, indices: np.ndarray, palette: np.ndarray) -> Image.Image:
    image = Image.fromarray(indices.astype(np.uint8), "L").convert("P")
    image.putpalette(palette.astype(np.uint8).ravel().tolist())
    return image if mode == "P" else image.convert(mode)


def test_palette_png_with_a_transparent_index(tmp_path: Path) -> None:
    palette = RNG.integers(0, 256, (4, 3))
    indices = RNG.integers(0, 4, (6, 6))
    image = palette_image("P", indices, palette)
    image.info["transparency"] = 2
    image = reopened(image, tmp_path / "palette.png")
    assert image.info["transparency"] == 2
    alpha = np.where(indices == 2, 0, 255)
    assert np.array_equal(rgb_of(image), composited(palette[indices], alpha))
    assert (rgb_of(image)[indices == 2] == 255).all()


@pytest.mark.parametrize("mode, suffix", [("RGBA", "png"), ("LA", "png"), ("PA", "tif")])
def test_alpha_modes_are_composited_on_white(tmp_path: Path, mode: str, suffix: str) -> None:
    alpha = RNG.integers(0, 256, (5, 6))
    alpha[0, :2] = [0, 255]
    if mode == "RGBA":
        colour = RNG.integers(0, 256, (5, 6, 3))
        image = Image.fromarray(np.dstack([colour, alpha]).astype(np.uint8), "RGBA")
    elif mode == "LA":
        level = RNG.integers(0, 256, (5, 6))
        colour = grey(level)
        image = Image.fromarray(np.dstack([level, alpha]).astype(np.uint8), "LA")
    else:
        palette, indices = RNG.integers(0, 256, (8, 3)), RNG.integers(0, 8, (5, 6))
        colour = palette[indices]
        image = palette_image("PA", indices, palette)
        image.putalpha(Image.fromarray(alpha.astype(np.uint8), "L"))
    image = reopened(image, tmp_path / f"alpha.{suffix}")
    assert np.array_equal(rgb_of(image), composited(colour, alpha))
    assert rgb_of(image)[0, 0].tolist() == list(BACKGROUND)


def test_cmyk_tiff(tmp_path: Path) -> None:
    ink = RNG.integers(0, 256, (5, 5, 4))
    image = reopened(Image.fromarray(ink.astype(np.uint8), "CMYK"), tmp_path / "cmyk.tif")
    expected = np.round((255 - ink[..., :3]) * (255 - ink[..., 3:]) / 255)  # (1 - C)(1 - K), per channel
    assert np.array_equal(rgb_of(image), expected)


def test_one_bit_png(tmp_path: Path) -> None:
    bits = RNG.integers(0, 2, (6, 9)).astype(bool)
    image = reopened(Image.fromarray(bits), tmp_path / "bits.png")
    assert np.array_equal(rgb_of(image), grey(bits * 255))


def test_greyscale_png(tmp_path: Path) -> None:
    level = RNG.integers(0, 256, (6, 5)).astype(np.uint8)
    image = reopened(Image.fromarray(level, "L"), tmp_path / "grey.png")
    assert np.array_equal(rgb_of(image), grey(level))


def test_rgb_png_is_returned_unchanged(tmp_path: Path) -> None:
    colour = RNG.integers(0, 256, (4, 5, 3)).astype(np.uint8)
    image = reopened(Image.fromarray(colour, "RGB"), tmp_path / "colour.png")
    assert to_rgb(image) is image
    assert np.array_equal(rgb_of(image), colour)


def test_ycbcr() -> None:
    """PIL decodes YCbCr JPEGs and TIFFs to RGB itself; an image in the mode is built in memory."""
    ycc = RNG.integers(0, 256, (6, 6, 3)).astype(np.float64)
    image = Image.frombytes("YCbCr", (6, 6), ycc.astype(np.uint8).tobytes())
    y, cb, cr = ycc[..., 0], ycc[..., 1] - 128, ycc[..., 2] - 128
    # JFIF (ITU-R BT.601, full range); PIL's fixed-point arithmetic differs by at most 1.
    expected = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1)
    assert np.abs(rgb_of(image) - np.clip(np.round(expected), 0, 255)).max() <= 1


def test_lab_tiff(tmp_path: Path) -> None:
    """CIELAB (PIL stores L scaled to 0..255, a and b as signed bytes) -> XYZ (D50) -> sRGB, the textbook way, on
    colours inside the sRGB gamut. PIL converts through LittleCMS, whose rendering differs by a few levels; reading
    the channels wrongly (a and b offset by 128, or the bytes as RGB) differs by tens to hundreds."""
    lab = np.dstack([RNG.integers(60, 230, (8, 8)), RNG.integers(-30, 30, (8, 8)), RNG.integers(-30, 30, (8, 8))])
    raw = np.dstack([lab[..., :1].astype(np.uint8), lab[..., 1:].astype(np.int8).view(np.uint8)])
    image = reopened(Image.frombytes("LAB", (8, 8), raw.tobytes()), tmp_path / "lab.tif")
    fy = (lab[..., 0] / 255 * 100 + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.array([0.96422, 1.0, 0.82521]) * np.where(f**3 > 216 / 24389, f**3, (116 * f - 16) / (24389 / 27))
    to_linear_srgb = np.array(  # XYZ (D50, Bradford-adapted) -> linear sRGB
        [[3.1338561, -1.6168667, -0.4906146], [-0.9787684, 1.9161415, 0.0334540], [0.0719453, -0.2289914, 1.4052427]]
    )
    linear = xyz @ to_linear_srgb.T
    in_gamut = ((linear >= 0) & (linear <= 1)).all(axis=-1)
    assert in_gamut.mean() > 0.5
    expected = np.round(
        255 * np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear.clip(0) ** (1 / 2.4) - 0.055)
    )
    difference = np.abs(rgb_of(image) - expected)[in_gamut]
    assert difference.max() <= 12 and difference.mean() <= 3, (difference.max(), difference.mean())


def test_hsv() -> None:
    """PIL opens no file as HSV; an image in the mode is built in memory."""
    hsv = RNG.integers(0, 256, (5, 5, 3))
    image = Image.frombytes("HSV", (5, 5), hsv.astype(np.uint8).tobytes())
    expected = np.array([[colorsys.hsv_to_rgb(*(pixel / 255)) for pixel in row] for row in hsv]) * 255
    assert np.abs(rgb_of(image) - np.round(expected)).max() <= 1


def test_the_collator_gets_the_pixels_of_the_8_bit_equivalent_of_a_16_bit_png(tmp_path: Path) -> None:
    """A 16-bit PNG holding v * 257 (the exact 16-bit form of 8-bit v) trains on the same pixels as the 8-bit PNG."""
    level = RNG.integers(0, 256, (32, 32)).astype(np.uint16)
    Image.fromarray((level * 257).astype(np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(level.astype(np.uint8), "L").save(tmp_path / "flat.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    processor = VQAProcessor.train_tiny(["what shape?"] * 4, ["circle"] * 4, image_size=32)
    collate = VQACollator(processor)
    rows = [
        {
            "question": "what shape?",
            "image": {"path": str(tmp_path / name), "bytes": None},
            "multiple_choice_answer": "a",
        }
        for name in ("deep.png", "flat.png")
    ]
    pixels = collate(rows)["pixel_values"]  # (2, 3, 32, 32): one row per distinct file
    assert pixels.shape == (2, 3, 32, 32)
    assert torch.equal(pixels[0], pixels[1])
    assert pixels[0].std() > 0.1  # not a white (or blank) image
