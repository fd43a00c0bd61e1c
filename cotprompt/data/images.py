"""Reading image files as an image viewer shows them, with clear errors for files it cannot show.

:func:`load_image` is the one function that turns an image file into the RGB pixels the model
sees; datasets (:meth:`ImageRecord.load`), :meth:`CoTPipeline.predict` and the feature cache all
go through it (in-memory PIL images through :func:`to_rgb`, its second half). What it does, in
order:

1. **Frames**: a multi-frame file (animated GIF/PNG/WebP, multi-page TIFF) gives its first frame,
   as a viewer shows before playing it.
2. **Orientation**: the EXIF (or XMP) orientation tag is applied (``ImageOps.exif_transpose``),
   so a photo taken sideways comes out upright.
3. **Bit depth**: 1-bit images become black and white. 16-bit greyscale (``I;16``, ``I;16B``...)
   is scaled from its full 0..65535 range to 0..255 (``round(v * 255 / 65535)``, what web
   browsers and the PNG specification do; a 12-bit image stored in 16 bits therefore looks dark,
   as it does in a browser). 32-bit integers (``I``) within 0..65535 are read the same way (a
   16-bit PGM or PNG opens as ``I``); beyond it, and for 32-bit floats (``F``) outside 0..1,
   the image's value range (min..max) is stretched to 0..255. Floats within 0..1 are scaled by
   255 (0 = black, 1 = white). A float image with NaN or infinite values is refused.
4. **Colour**: palette images (with their transparency), premultiplied alpha, ``CMYK``,
   ``YCbCr``, ``LAB`` and ``HSV`` are converted; an embedded **ICC profile** is converted to
   sRGB with PIL's ``ImageCms`` (littlecms), with the profile's rendering intent; a PNG ``gAMA``
   without an ICC profile or ``sRGB`` chunk is applied as browsers do. An unreadable ICC profile
   is ignored with a warning (viewers then show the pixels as sRGB).
5. **Transparency** (``RGBA``, ``LA``, ``PA``, palette or single-colour ``tRNS`` transparency) is
   composited on **white** (:data:`BACKGROUND`), as a viewer shows it on a white page.

The image returned carries none of the display metadata it applied (``gamma``, ``icc_profile``,
``srgb``, ``transparency``, ``chromaticity``... are gone from its ``info``): it is shown as it is,
and :func:`to_rgb` of it changes nothing.

A file that cannot be shown (missing, not an image, corrupt or truncated, an unsupported mode,
NaN pixels) raises a one-line :class:`~cotprompt.errors.DataError` naming the file.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
from pathlib import Path
from typing import Any, cast

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cotprompt.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_LOADER_VERSION = 2
"""Version of the file -> pixels rule of :func:`load_image`; part of the feature cache's keys, so
that features cached under another rule are computed again. Bump it when pixels change."""

BACKGROUND: tuple[int, int, int] = (255, 255, 255)
"""The colour transparent pixels are composited on (white)."""

_ORIENTATION = 0x0112
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = {"RGBA": "RGB", "LA": "L"}
_CONVERTED = {"RGBa": "RGBA", "La": "LA", "PA": "RGBA", "RGBX": "RGB", "YCbCr": "RGB",
              "HSV": "RGB", "LAB": "RGB", "1": "L"}
_GAMMA_TOLERANCE = 0.01
_Info = dict[str | tuple[int, int], Any]  # PIL's Image.info


def load_image(path: str | Path) -> Image.Image:
    """Read an image file fully and return it as RGB, as an image viewer shows it.

    The pixel data is decoded at once (``Image.load``), so a truncated file fails here rather than
    later inside a data loader. See the module's description for what is applied (first frame,
    EXIF orientation, bit depth, ICC profile, transparency on white...).

    Args:
        path: The image file.

    Returns:
        The decoded image, mode ``"RGB"``.

    Raises:
        DataError: The file does not exist, is not a readable (complete) image, or holds pixels
            that cannot be shown (an unsupported mode, NaN values); the message names the file.
    """
    path = Path(path)
    name = str(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise DataError(f"cannot read image {name!r}: the path {what}")
    try:
        with Image.open(path) as img:
            frames = getattr(img, "n_frames", 1)
            if frames > 1:
                logger.debug("%s has %d frames; using the first", name, frames)
            img.load()
            return _displayed(img, name)
    except DataError:
        raise
    except UnidentifiedImageError as exc:
        raise DataError(f"cannot read image {name!r}: not a recognised image format") from exc
    except Image.DecompressionBombError as exc:
        raise DataError(f"cannot read image {name!r}: {exc}") from exc
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:  # not the file's bytes
        raise DataError(f"cannot read image {name!r}: {exc.strerror or exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read image {name!r}: corrupt or truncated ({exc})") from exc


def to_rgb(image: Image.Image, *, name: str | None = None) -> Image.Image:
    """An in-memory PIL image as RGB, by the rules :func:`load_image` applies to files.

    The current frame is used; orientation, bit depth, colour profile and transparency are
    handled as for a file. The result carries no display metadata (``gamma``, ``icc_profile``,
    ``srgb``, ``transparency``... are dropped from its ``info`` once applied), so
    ``to_rgb(to_rgb(x))`` equals ``to_rgb(x)``. An RGB image that needs nothing is returned as it
    is; ``image`` itself is never changed.

    Args:
        image: The image (a lazily opened file is decoded here).
        name: How to name it in errors (default: its ``filename``, else ``<in-memory image>``).

    Raises:
        DataError: The image cannot be decoded or shown (unsupported mode, NaN values).
    """
    label = name or getattr(image, "filename", None) or "<in-memory image>"
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read image {label!r}: corrupt or truncated ({exc})") from exc
    return _displayed(image, label)


def image_content_key(image: Image.Image) -> bytes:
    """A digest of what the model sees of an in-memory image (its :func:`to_rgb` pixels)."""
    rgb = to_rgb(image)
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"rgb:{IMAGE_LOADER_VERSION}:{rgb.size}:".encode())
    digest.update(rgb.tobytes())
    return digest.digest()


# -- the rules --------------------------------------------------------------------------------


_DISPLAY_INFO = ("gamma", "icc_profile", "srgb", "transparency", "chromaticity", "background",
                 "adobe", "adobe_transform")
"""``info`` keys that say how to show the pixels; the shown image carries none of them, so that
showing it again (:func:`to_rgb`) changes nothing."""


def _displayed(img: Image.Image, name: str) -> Image.Image:
    """``img`` (decoded) as RGB: orientation, bit depth, colours, profile, transparency; without
    the display metadata it applied (a copy when ``img`` itself would lose some)."""
    shown = _shown(img, name)
    if any(key in shown.info for key in _DISPLAY_INFO):
        if shown is img:
            shown = img.copy()  # leave the caller's image (and its metadata) alone
        shown.info = {k: v for k, v in shown.info.items() if k not in _DISPLAY_INFO}
    return shown


def _shown(img: Image.Image, name: str) -> Image.Image:
    """``img`` (decoded) as RGB: orientation, bit depth, colours, profile, transparency."""
    img = _oriented(img, name)
    if img.mode == "RGB" and not _needs_colour_work(img.info):
        return img
    try:
        img = _eight_bit(img, name)
        img = _converted(img)
    except DataError:
        raise
    except (ValueError, OSError) as exc:  # a conversion PIL does not support
        raise DataError(
            f"cannot read image {name!r}: cannot convert its mode {img.mode!r} to RGB ({exc})"
        ) from exc
    info = img.info
    alpha = None
    if img.mode in _ALPHA_MODES:
        alpha = img.getchannel("A")
        img = img.convert(_ALPHA_MODES[img.mode])
    if img.mode not in ("L", "RGB", "CMYK"):
        raise DataError(f"cannot read image {name!r}: unsupported image mode {img.mode!r}")
    img = _in_srgb(img, info, name)
    if alpha is None:
        return img if img.mode == "RGB" else img.convert("RGB")
    background = Image.new("RGB", img.size, BACKGROUND)
    background.paste(img.convert("RGB"), mask=alpha)
    return background


def _needs_colour_work(info: _Info) -> bool:
    return bool(info.get("icc_profile")) or "transparency" in info or _gamma_exponent(info) != 1.0


def _oriented(img: Image.Image, name: str) -> Image.Image:
    """Apply the EXIF/XMP orientation tag (an unreadable EXIF block is ignored, as viewers do)."""
    try:
        orientation = img.getexif().get(_ORIENTATION, 1)
    except Exception as exc:  # a broken EXIF block: viewers show the image as it is
        logger.debug("ignoring the unreadable EXIF data of %s: %s", name, exc)
        return img
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        transposed = ImageOps.exif_transpose(img)
        assert transposed is not None
        return transposed
    return img


def _eight_bit(img: Image.Image, name: str) -> Image.Image:
    """16- and 32-bit greyscale (``I;16*``, ``I``, ``F``) as ``L`` (``LA`` with tRNS)."""
    mode = img.mode
    if mode not in (*_SIXTEEN_BIT, "I", "F"):
        return img
    values = np.asarray(img)
    wide = values.astype(np.float64)
    if mode == "F" and not np.isfinite(wide).all():
        bad = int((~np.isfinite(wide)).sum())
        raise DataError(
            f"cannot read image {name!r}: {bad} pixel(s) are NaN or infinite (mode 'F'), which "
            "no viewer can show"
        )
    top = 1.0 if mode == "F" else 65535.0
    low, high = (float(wide.min()), float(wide.max())) if wide.size else (0.0, 0.0)
    if mode in _SIXTEEN_BIT or (low >= 0 and high <= top) or high == low:
        scaled = np.clip(wide, 0, top) * (255.0 / top)  # the nominal range; a constant clips
    else:
        scaled = (wide - low) * (255.0 / (high - low))  # the image's own value range
    grey = Image.fromarray(np.rint(scaled).astype(np.uint8))
    transparent = img.info.get("transparency")
    if isinstance(transparent, int) and mode != "F":
        alpha = Image.fromarray(np.where(values == transparent, 0, 255).astype(np.uint8))
        grey = Image.merge("LA", (grey, alpha))
    grey.info = {k: v for k, v in img.info.items() if k != "transparency"}
    return grey


def _converted(img: Image.Image) -> Image.Image:
    """Palette, premultiplied, padded and non-RGB colour modes as L / LA / RGB / RGBA / CMYK."""
    mode = img.mode
    info = dict(img.info)
    if mode == "P":
        has_alpha = "transparency" in info or (img.palette is not None
                                                and img.palette.mode == "RGBA")
        img = img.convert("RGBA" if has_alpha else "RGB")
    elif mode in ("L", "RGB") and "transparency" in info:
        img = img.convert("LA" if mode == "L" else "RGBA")  # a single transparent colour (tRNS)
    elif mode in _CONVERTED:
        img = img.convert(_CONVERTED[mode])
        if mode == "LAB":
            info.pop("icc_profile", None)  # the LAB values are device-independent already
    if img.mode != mode:  # a new image: it keeps the metadata still to apply (its profile...)
        info.pop("transparency", None)
        img.info = info
    return img


def _in_srgb(img: Image.Image, info: _Info, name: str) -> Image.Image:
    """``img`` (L / RGB / CMYK) with its ICC profile, or PNG gamma, converted to sRGB."""
    profile = info.get("icc_profile")
    if profile:
        transform = _srgb_transform(profile, img.mode)
        if isinstance(transform, _ProfileError):  # warned once per profile, then at debug level
            level = logging.DEBUG if transform.warned else logging.WARNING
            transform.warned = True
            logger.log(level, "ignoring the ICC profile of %s (and of any other image with the "
                       "same profile): %s", name, transform)
            return img
        from PIL import ImageCms

        # not in place: PIL returns the converted image (None only for inPlace=True)
        return cast(Image.Image, ImageCms.applyTransform(img, transform))
    exponent = _gamma_exponent(info)
    if exponent != 1.0 and img.mode in ("L", "RGB"):
        table = [round(255 * (v / 255) ** exponent) for v in range(256)]
        return img.point(table * len(img.getbands()))
    return img


def _gamma_exponent(info: _Info) -> float:
    """The exponent that shows a PNG with a ``gAMA`` chunk as browsers do (1.0: nothing to do).

    Only without an ICC profile or ``sRGB`` chunk (they take precedence), and only when the
    gamma differs from sRGB's nominal 1/2.2.
    """
    gamma = info.get("gamma")
    if not isinstance(gamma, (int, float)) or gamma <= 0 or "srgb" in info:
        return 1.0
    if info.get("icc_profile"):
        return 1.0
    exponent = 1.0 / (float(gamma) * 2.2)
    return 1.0 if abs(exponent - 1.0) < _GAMMA_TOLERANCE else exponent


class _ProfileError(Exception):
    """An ICC profile that cannot be read or does not fit the image."""

    warned = False


_COLOUR_SPACES = {"L": "GRAY", "RGB": "RGB", "CMYK": "CMYK"}
_transforms: dict[tuple[bytes, str], Any] = {}


def _srgb_transform(profile: bytes, mode: str) -> Any:
    """A cached littlecms transform from ``profile`` (for ``mode``) to sRGB ``RGB``, or the
    (cached) :class:`_ProfileError` saying why there is none."""
    key = (hashlib.blake2b(profile, digest_size=16).digest(), mode)
    cached = _transforms.get(key)  # shared by verify_images' threads: no check-then-index
    if cached is None:
        cached = _build_transform(profile, mode)
        if len(_transforms) >= 32:
            _transforms.clear()
        _transforms[key] = cached
    return cached


def _build_transform(profile: bytes, mode: str) -> Any:
    """The transform, or the :class:`_ProfileError` saying why there is none."""
    from PIL import ImageCms

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        space = source.profile.xcolor_space.strip()
        if space != _COLOUR_SPACES[mode]:
            return _ProfileError(f"a {space!r} profile on a {mode!r} image")
        intent = ImageCms.getDefaultIntent(source)
        return ImageCms.buildTransform(
            source, _srgb_profile(), mode, "RGB", renderingIntent=ImageCms.Intent(intent)
        )
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        return _ProfileError(str(exc) or type(exc).__name__)


@functools.cache
def _srgb_profile() -> Any:
    from PIL import ImageCms

    return ImageCms.createProfile("sRGB")
