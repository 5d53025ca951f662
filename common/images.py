"""Decode one image file, whatever its format and mode, into a square RGB uint8 array.

Pillow and numpy only: the Pokemon fetcher in data/pokemon.py uses the same conversions.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageColor, ImageOps

RESIZE_POLICIES = ("crop", "pad")
# Pillow's modes whose pixels carry an alpha channel, straight or premultiplied.
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
# Pillow's 16-bit unsigned grayscale modes. Pillow's own convert("L") clips them at 255, which
# turns any 16-bit image except a very dark one white, so they are scaled here instead.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
SIXTEEN_BIT_TO_EIGHT = 65535 / 255  # = 257: maps 0..65535 onto 0..255 exactly at both ends
# JPEG decoding is asked for at least this multiple of the target size (Image.draft), so a large
# photo decodes at 1/2, 1/4 or 1/8 scale and Lanczos filtering still has detail to work from.
DRAFT_FACTOR = 2
# Downscale in two steps when shrinking by more than this factor: Pillow first averages whole
# pixel blocks (fast), then resamples the remaining factor of at most 3 with Lanczos filtering.
REDUCING_GAP = 3.0


def parse_color(color: str | tuple | list) -> tuple[int, int, int]:
    """Return an (R, G, B) tuple from a colour name or hex string that Pillow's ImageColor accepts, or from three integers in 0..255.

    Raises ValueError for anything else.
    """
    if isinstance(color, str):
        return ImageColor.getrgb(color)[:3]
    if isinstance(color, (tuple, list)) and len(color) == 3:
        if all(isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255 for value in color):
            return tuple(color)
    raise ValueError(f"invalid colour {color!r}: expected a name such as 'white', a hex string such as '#ffffff' or (R, G, B) with each in 0..255")


def prepare_image(path: Path, size: int, policy: str, background: tuple[int, int, int]) -> np.ndarray:
    """Decode the first frame of an image file into a size x size x 3 uint8 array.

    The image is turned upright from its EXIF orientation, its transparent pixels are composited
    onto `background`, then it is centre-cropped (`policy` "crop") or padded with `background`
    ("pad") to a square and resized with Lanczos filtering. Raises what Pillow raises for a file
    it cannot read in full: OSError (a truncated file), PIL.UnidentifiedImageError, SyntaxError,
    ValueError, Image.DecompressionBombError and a few more from its less common decoders.
    """
    with Image.open(path) as image:
        image.draft(None, (size * DRAFT_FACTOR, size * DRAFT_FACTOR))  # no effect on formats other than JPEG
        image.seek(0)  # the first frame of an animation (GIF, APNG, WEBP) or a multi-page TIFF
        image.load()  # decodes every byte, so a truncated file fails here, before training
        upright = ImageOps.exif_transpose(image)
        rgb = to_rgb(upright, background)
    square = make_square(rgb, policy, background)
    return np.asarray(square.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP))


def prepare_image_or_error(path: Path, size: int, policy: str, background: tuple[int, int, int]) -> tuple[np.ndarray | None, str | None]:
    """Return (pixels, None) from prepare_image, or (None, the reason) when the file cannot be decoded.

    The worker threads run this function, so one bad file never stops the others.
    """
    try:
        return prepare_image(path, size, policy, background), None
    except Exception as error:  # noqa: BLE001 - Pillow's decoders raise many types (struct.error, IndexError, KeyError...) on malformed files
        return None, describe_error(error)


def describe_error(error: BaseException) -> str:
    """Return a short one-line reason for a decoding failure."""
    if isinstance(error, Image.UnidentifiedImageError):
        return "not an image Pillow can read"
    text = " ".join(str(error).split())
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror
    if len(text) > 80:
        text = text[:77] + "..."
    return text or type(error).__name__


def to_rgb(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Convert an image of any Pillow mode to RGB, compositing transparent pixels onto `background`."""
    if image.mode in SIXTEEN_BIT_MODES:
        image = scale_to_eight_bits(np.asarray(image), full_scale=65535)
    elif image.mode == "I":
        # 32-bit integers: values above 255 are taken as 16-bit data, as some decoders return it.
        values = np.asarray(image)
        image = scale_to_eight_bits(values, full_scale=65535 if values.max() > 255 else 255)
    elif image.mode == "F":
        # Floats: data in [0, 1] is scaled up, data beyond 255 is taken as 16-bit.
        values = np.asarray(image)
        maximum = float(values.max()) if values.size else 0.0
        if maximum <= 1.0:
            full_scale = 1.0
        elif maximum <= 255:
            full_scale = 255
        else:
            full_scale = 65535
        image = scale_to_eight_bits(values, full_scale=full_scale)

    if image.mode in ALPHA_MODES or "transparency" in image.info:
        # Covers RGBA, LA and palette images with a transparent index, and L or RGB images with a transparent colour key.
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    # 1, L, P, CMYK, YCbCr, RGBX, HSV and RGB itself; Pillow raises ValueError for a mode it cannot convert (LAB).
    return image.convert("RGB")


def scale_to_eight_bits(values: np.ndarray, full_scale: float) -> Image.Image:
    """Map values in 0..full_scale linearly onto an 8-bit grayscale image, clipping only what lies outside."""
    scaled = np.rint(values.astype(np.float64) * (255 / full_scale))
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8))  # a 2-D uint8 array becomes mode L


def make_square(image: Image.Image, policy: str, background: tuple[int, int, int]) -> Image.Image:
    """Centre-crop the image to its shorter side ("crop"), or pad it with `background` to its longer side ("pad")."""
    width, height = image.size
    if width == height:
        return image
    if policy == "crop":
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        return image.crop((left, top, left + side, top + side))
    if policy == "pad":
        side = max(width, height)
        canvas = Image.new("RGB", (side, side), background)
        canvas.paste(image, ((side - width) // 2, (side - height) // 2))
        return canvas
    raise ValueError(f"invalid resize policy {policy!r}: expected one of {', '.join(RESIZE_POLICIES)}")
