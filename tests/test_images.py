"""Images are read as an image viewer shows them, by one function, or refused by name.

Every file here is written by PIL itself (or, for the ICC profiles, built byte by byte below),
then read back with :func:`cotprompt.data.images.load_image`; in-memory images go through
:func:`~cotprompt.data.images.to_rgb`. Also: the one folder-listing rule, ``predict``'s
``on_bad_image`` and the feature cache's keys.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from cotprompt.data import ImageRecord, from_folder
from cotprompt.data.images import BACKGROUND, IMAGE_LOADER_VERSION, load_image, to_rgb
from cotprompt.data.sources import list_image_files
from cotprompt.errors import ConfigError, DataError
from cotprompt.training.feature_cache import content_key

# -- helpers ----------------------------------------------------------------------------------


def grey_levels(image: Image.Image) -> np.ndarray:
    """The image as ``[H, W, 3]`` uint8, checked to be grey (R = G = B)."""
    pixels = np.asarray(image)
    assert image.mode == "RGB"
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    return pixels[..., 0]


def assert_gradient(levels: np.ndarray, low: int = 0, high: int = 255) -> None:
    """Row-major values rise from ``low`` to ``high`` and take many distinct values."""
    flat = levels.reshape(-1).astype(int)
    assert flat[0] == low and flat[-1] == high, (flat[0], flat[-1])
    assert (np.diff(flat) >= 0).all()
    assert len(np.unique(flat)) > 200


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + bytes(4) + _s15(x) + _s15(y) + _s15(z)


def _curve(gamma: float) -> bytes:
    return b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)


def icc_profile(space: str, tags: dict[str, bytes]) -> bytes:
    """A minimal ICC v2 display profile (matrix/TRC or grey TRC), as littlecms reads it."""
    text = b"test profile\0"
    tags = {
        "desc": b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8 + 3 + 67),
        "wtpt": _xyz(0.9642, 1.0, 0.8249),
        "cprt": b"text" + bytes(4) + b"none\0",
        **tags,
    }
    start = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags.items():
        body += bytes(-len(body) % 4)
        table += signature.encode() + struct.pack(">II", start + len(data), len(body))
        data += body
    header = (
        struct.pack(">I", start + len(data)) + b"none" + bytes([2, 0x10, 0, 0]) + b"mntr"
        + space.encode().ljust(4) + b"XYZ " + bytes(12) + b"acsp" + bytes(28)
        + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + bytes(48)
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


# sRGB's primaries (D50); a profile with red and green swapped shows stored red as green
_RED, _GREEN, _BLUE = (0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)
SWAPPED_RGB = icc_profile("RGB", {
    "rXYZ": _xyz(*_GREEN), "gXYZ": _xyz(*_RED), "bXYZ": _xyz(*_BLUE),
    "rTRC": _curve(2.2), "gTRC": _curve(2.2), "bTRC": _curve(2.2),
})
LINEAR_GREY = icc_profile("GRAY", {"kTRC": _curve(1.0)})


# -- bit depth --------------------------------------------------------------------------------


def test_16_bit_greyscale_png_is_a_gradient_not_white(tmp_path: Path) -> None:
    values = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    levels = grey_levels(load_image(tmp_path / "g16.png"))
    assert_gradient(levels)
    expected = np.rint(values.astype(np.float64) * 255 / 65535)  # full scale, as browsers do
    assert np.array_equal(levels, expected)


@pytest.mark.parametrize("suffix", [".tif", ".pgm"])
def test_16_bit_tiff_and_pgm(tmp_path: Path, suffix: str) -> None:
    values = (np.arange(64 * 64, dtype=np.uint32) * 16).astype(np.uint16).reshape(64, 64)
    Image.fromarray(values).save(tmp_path / f"g{suffix}")  # I;16 in TIFF, I in PGM
    levels = grey_levels(load_image(tmp_path / f"g{suffix}"))
    assert_gradient(levels)
    assert levels[32, 0] == round(int(values[32, 0]) * 255 / 65535)


def test_an_8_bit_image_stored_in_16_bits_keeps_its_values(tmp_path: Path) -> None:
    eight = np.arange(256, dtype=np.uint16).reshape(16, 16)
    Image.fromarray(eight * 257).save(tmp_path / "x.png")
    assert np.array_equal(grey_levels(load_image(tmp_path / "x.png")), eight)


def test_float_tiff_in_0_1_is_not_black(tmp_path: Path) -> None:
    values = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    Image.fromarray(values).save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    levels = grey_levels(load_image(tmp_path / "f.tif"))
    assert_gradient(levels)
    assert np.array_equal(levels, np.rint(values.astype(np.float64) * 255))


def test_float_and_32_bit_images_beyond_their_range_are_stretched(tmp_path: Path) -> None:
    floats = np.linspace(-3.5, 1200.0, 64 * 64, dtype=np.float32).reshape(64, 64)
    Image.fromarray(floats).save(tmp_path / "f.tif")
    assert_gradient(grey_levels(load_image(tmp_path / "f.tif")))
    ints = (np.arange(64 * 64, dtype=np.int32) * 1000 - 70000).reshape(64, 64)
    Image.fromarray(ints).save(tmp_path / "i.tif")
    assert Image.open(tmp_path / "i.tif").mode == "I"
    assert_gradient(grey_levels(load_image(tmp_path / "i.tif")))


def test_float_image_with_nan_is_refused_by_name(tmp_path: Path) -> None:
    values = np.ones((8, 8), dtype=np.float32)
    values[2, 3] = np.nan
    Image.fromarray(values).save(tmp_path / "nan.tif")
    with pytest.raises(DataError, match=r"nan\.tif.*NaN or infinite") as excinfo:
        load_image(tmp_path / "nan.tif")
    assert "\n" not in str(excinfo.value)


def test_one_bit_image(tmp_path: Path) -> None:
    image = Image.new("1", (8, 8), 0)
    image.paste(1, (0, 0, 4, 8))
    image.save(tmp_path / "one.png")
    levels = grey_levels(load_image(tmp_path / "one.png"))
    assert (levels[:, :4] == 255).all() and (levels[:, 4:] == 0).all()


# -- orientation, frames ----------------------------------------------------------------------


def test_exif_rotated_jpeg_comes_out_rotated(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 10))  # a blue top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "r.jpg", exif=exif, quality=95)
    shown = load_image(tmp_path / "r.jpg")
    assert shown.size == (20, 40)
    red, green, blue = shown.getpixel((15, 3))  # the blue corner is now top-right
    assert blue > 200 and red < 50 and green < 50
    assert shown.getpixel((3, 3))[0] > 200


def test_first_frame_of_animated_gif_and_multipage_tiff(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    for name in ("a.gif", "a.tif"):
        frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:])
        assert Image.open(tmp_path / name).n_frames == 2
        assert load_image(tmp_path / name).getpixel((0, 0)) == (255, 0, 0)


# -- colour and transparency ------------------------------------------------------------------


def test_transparency_is_composited_on_white(tmp_path: Path) -> None:
    Image.new("RGBA", (4, 4), (255, 0, 0, 128)).save(tmp_path / "rgba.png")
    assert load_image(tmp_path / "rgba.png").getpixel((0, 0)) == (255, 127, 127)
    Image.new("LA", (4, 4), (0, 0)).save(tmp_path / "la.png")
    assert load_image(tmp_path / "la.png").getpixel((0, 0)) == BACKGROUND
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.paste(0, (0, 0, 2, 4))
    palette.save(tmp_path / "p.png", transparency=1)  # the red entry is transparent
    shown = load_image(tmp_path / "p.png")
    assert shown.getpixel((0, 0)) == (0, 0, 0) and shown.getpixel((3, 0)) == BACKGROUND
    Image.new("RGB", (4, 4), (10, 20, 30)).save(tmp_path / "t.png", transparency=(10, 20, 30))
    assert load_image(tmp_path / "t.png").getpixel((0, 0)) == BACKGROUND
    grey16 = Image.fromarray(np.full((4, 4), 300, dtype=np.uint16))
    grey16.save(tmp_path / "t16.png", transparency=300)
    assert load_image(tmp_path / "t16.png").getpixel((0, 0)) == BACKGROUND


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk_is_converted(tmp_path: Path, suffix: str) -> None:
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / f"c{suffix}")
    red, green, blue = load_image(tmp_path / f"c{suffix}").getpixel((0, 0))
    assert red > 240 and green < 15 and blue < 15


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("YCbCr", (76, 85, 255), (254, 0, 0)),
        ("HSV", (0, 255, 255), (255, 0, 0)),
        ("LAB", (255, 128, 128), (254, 255, 254)),
        ("RGBX", (1, 2, 3, 0), (1, 2, 3)),
        ("RGBa", (0, 0, 0, 0), BACKGROUND),
        ("PA", (0, 0), BACKGROUND),
        ("I;16B", 65535, (255, 255, 255)),
    ],
)
def test_in_memory_modes(mode: str, value: object, expected: tuple[int, int, int]) -> None:
    image = Image.new(mode, (2, 2), value)  # type: ignore[arg-type]
    assert to_rgb(image).getpixel((0, 0)) == expected
    assert ImageRecord(path=None, label=0, image=image).load().getpixel((0, 0)) == expected


def test_icc_profile_is_converted_to_srgb(tmp_path: Path) -> None:
    for name in ("s.png", "s.jpg", "s.tif"):
        Image.new("RGB", (4, 4), (200, 0, 0)).save(tmp_path / name, icc_profile=SWAPPED_RGB)
        red, green, blue = load_image(tmp_path / name).getpixel((0, 0))
        assert green > 180 and red < 20 and blue < 20, name  # stored red is this profile's green
    Image.new("RGBA", (4, 4), (200, 0, 0, 255)).save(tmp_path / "a.png", icc_profile=SWAPPED_RGB)
    assert load_image(tmp_path / "a.png").getpixel((0, 0))[1] > 180
    Image.new("L", (4, 4), 128).save(tmp_path / "g.png", icc_profile=LINEAR_GREY)
    assert load_image(tmp_path / "g.png").getpixel((0, 0)) == (188, 188, 188)  # linear -> sRGB


def test_unusable_icc_profile_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    Image.new("L", (4, 4), 128).save(tmp_path / "bad.png", icc_profile=b"not a profile" * 20)
    Image.new("L", (4, 4), 128).save(tmp_path / "rgb.png", icc_profile=SWAPPED_RGB)
    with caplog.at_level(logging.DEBUG, logger="cotprompt.data.images"):  # once per profile
        for name in ("bad.png", "rgb.png"):
            assert load_image(tmp_path / name).getpixel((0, 0)) == (128, 128, 128)
    assert "bad.png" in caplog.text and "'RGB' profile on a 'L' image" in caplog.text


def test_png_gamma_is_applied_as_browsers_do(tmp_path: Path) -> None:
    linear = PngImagePlugin.PngInfo()
    linear.add(b"gAMA", struct.pack(">I", 100000))  # gamma 1.0: linear samples
    Image.new("L", (2, 2), 128).save(tmp_path / "linear.png", pnginfo=linear)
    assert load_image(tmp_path / "linear.png").getpixel((0, 0)) == (186, 186, 186)
    nominal = PngImagePlugin.PngInfo()
    nominal.add(b"gAMA", struct.pack(">I", 45455))  # sRGB's nominal 1/2.2: nothing to do
    Image.new("L", (2, 2), 128).save(tmp_path / "nominal.png", pnginfo=nominal)
    assert load_image(tmp_path / "nominal.png").getpixel((0, 0)) == (128, 128, 128)


def test_plain_rgb_is_unchanged(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    assert np.array_equal(np.asarray(load_image(tmp_path / "x.png")), pixels)
    image = Image.fromarray(pixels)
    assert to_rgb(image) is image


def test_unsupported_or_broken_files_are_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(DataError, match=r"text\.png.*not a recognised image format"):
        load_image(tmp_path / "text.png")
    with pytest.raises(DataError, match=r"<in-memory image>.*unsupported image mode 'XYZ9'"):
        to_rgb(_odd_mode_image())


def _odd_mode_image() -> Image.Image:
    """An image of a mode the loader has no rule for (a made-up mode name)."""
    image = Image.new("L", (2, 2))
    image._mode = "XYZ9"  # type: ignore[attr-defined]
    return image


@pytest.mark.parametrize("mode", Image.MODES)
def test_every_pil_mode_has_a_rule(mode: str) -> None:
    shown = to_rgb(Image.new(mode, (3, 2)))
    assert shown.mode == "RGB" and shown.size == (3, 2)


# -- one loader everywhere --------------------------------------------------------------------


def test_feature_cache_keys_on_what_the_model_sees(tmp_path: Path) -> None:
    upright = Image.new("RGB", (6, 4), (10, 20, 30))
    rotated = upright.copy()
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.info["exif"] = exif.tobytes()
    same_pixels = [ImageRecord(path=None, label=0, image=im) for im in (upright, rotated)]
    assert content_key(same_pixels[0]) != content_key(same_pixels[1])  # shown differently
    grey = Image.new("L", (4, 4), 7)
    as_rgb = Image.new("RGB", (4, 4), (7, 7, 7))
    assert content_key(ImageRecord(None, 0, grey)) == content_key(ImageRecord(None, 0, as_rgb))
    assert IMAGE_LOADER_VERSION >= 2  # files cached under the old rule are encoded again


def test_one_folder_listing_rule(tmp_path: Path) -> None:
    root = tmp_path / "images"
    for rel in ("b.png", "a/c.JPG", "a/.hidden.png", ".ipynb_checkpoints/b-checkpoint.png",
                "a/.cache/d.png", "._e.png", "notes.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (2, 2)).save(root / rel, format="PNG")
    assert list_image_files(root) == [root / "a" / "c.JPG", root / "b.png"]
    dataset = from_folder(root)  # classes "a" and ".ipynb_checkpoints" is skipped
    assert dataset.class_names == ["a"] and [r.path for r in dataset.records] == [
        root / "a" / "c.JPG"
    ]
    with pytest.raises(DataError, match="does not exist"):
        list_image_files(tmp_path / "absent")


def test_predict_on_bad_image_skip_and_error(tiny_backbone: object, tmp_path: Path) -> None:
    from cotprompt import CoTPipeline

    pipeline = CoTPipeline.create(backbone=tiny_backbone, tuner="coop",
                                  tuner_config={"n_ctx": 2}, class_names=["cat", "dog"],
                                  device="cpu")
    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"bad\.jpg"):
        pipeline.predict([good, bad])
    predictions = pipeline.predict([good, bad, tmp_path / "gone.png", good], on_bad_image="skip",
                                   batch_size=2)
    assert [p is None for p in predictions] == [False, True, True, False]
    assert predictions[0] == predictions[3]
    assert predictions[0] == pipeline.predict([good])[0]
    sixteen = tmp_path / "g16.png"
    Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(sixteen)
    white = Image.new("RGB", (8, 8), (255, 255, 255))
    assert pipeline.predict([sixteen]) == pipeline.predict([white])
    with pytest.raises(DataError, match="none of the 1 image"):
        pipeline.predict([bad], on_bad_image="skip")
    with pytest.raises(ConfigError, match="on_bad_image"):
        pipeline.predict([good], on_bad_image="ignore")


# -- the displayed image is final: no second pass changes it ------------------------------------


def _gamma_png(path: Path) -> Path:
    linear = PngImagePlugin.PngInfo()
    linear.add(b"gAMA", struct.pack(">I", 100000))  # gamma 1.0: linear samples
    Image.new("RGB", (8, 8), (128, 64, 200)).save(path, pnginfo=linear)
    return path


def _palette_with_transparency() -> Image.Image:
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.paste(0, (0, 0, 2, 4))
    palette.info["transparency"] = 1
    return palette


_DISPLAY_KEYS = ("gamma", "icc_profile", "srgb", "transparency", "chromaticity")


def test_to_rgb_is_idempotent(tmp_path: Path) -> None:
    gamma = load_image(_gamma_png(tmp_path / "g.png"))
    Image.new("RGB", (4, 4), (200, 0, 0)).save(tmp_path / "s.png", icc_profile=SWAPPED_RGB)
    icc_file = load_image(tmp_path / "s.png")
    icc_memory = Image.new("RGB", (4, 4), (200, 0, 0))
    icc_memory.info["icc_profile"] = SWAPPED_RGB
    grey_icc = Image.new("L", (4, 4), 128)
    grey_icc.info["icc_profile"] = LINEAR_GREY
    gamma_memory = Image.new("L", (4, 4), 128)
    gamma_memory.info["gamma"] = 1.0
    cases = [gamma, icc_file, icc_memory, grey_icc, gamma_memory, _palette_with_transparency()]
    cases += [Image.new(mode, (3, 2)) for mode in Image.MODES]
    for image in cases:
        once = to_rgb(image)
        twice = to_rgb(once)
        assert np.array_equal(np.asarray(once), np.asarray(twice)), image.mode
        assert not set(_DISPLAY_KEYS) & set(once.info), (image.mode, once.info.keys())
    assert gamma.getpixel((0, 0)) == to_rgb(gamma).getpixel((0, 0))
    assert icc_memory.info["icc_profile"] == SWAPPED_RGB  # the caller's image is left alone


def test_predict_reads_an_image_as_evaluate_does(
    tiny_backbone: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cotprompt import CoTPipeline
    from cotprompt.data.records import ImageClassificationDataset

    pipeline = CoTPipeline.create(backbone=tiny_backbone, tuner="coop",
                                  tuner_config={"n_ctx": 2}, class_names=["cat", "dog"],
                                  device="cpu")
    path = _gamma_png(tmp_path / "g.png")
    transform = pipeline.backbone.image_transform(train=False)
    dataset = ImageClassificationDataset([ImageRecord(path=path, label=0)], ["cat", "dog"],
                                         transform)
    expected = dataset[0][0].unsqueeze(0)
    seen: list = []
    encode = pipeline._encode_pixels

    def spy(pixels, frozen):  # type: ignore[no-untyped-def]
        seen.append(pixels.clone())
        return encode(pixels, frozen)

    monkeypatch.setattr(pipeline, "_encode_pixels", spy)
    prediction = pipeline.predict([path], top_k=2)[0]
    assert len(seen) == 1 and torch.equal(seen[0], expected)
    assert prediction == pipeline.predict(expected, top_k=2)[0]
    assert torch.equal(pipeline.logits([path]), pipeline.logits(expected))


def test_an_unreadable_file_is_not_called_corrupt(tmp_path, monkeypatch):
    path = tmp_path / "locked.png"
    Image.new("RGB", (4, 4), "red").save(path)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Image, "open", refuse)
    with pytest.raises(DataError, match=r"locked\.png': Permission denied$"):
        load_image(path)


def test_a_dangling_link_in_a_folder_is_reported(tmp_path, caplog):
    from cotprompt.data.sources import list_image_files

    Image.new("RGB", (4, 4), "red").save(tmp_path / "a.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "gone.png")
    with caplog.at_level(logging.WARNING):
        assert list_image_files(tmp_path) == [tmp_path / "a.png"]
    assert "b.png: a symbolic link to a missing file" in caplog.text
