"""Decode request images (base64 PNG/JPEG or `data:` URLs) into RGB PIL images, with bounds.

The size in bytes is checked on the base64 text before decoding, the pixel count on the image
header before the pixels are decompressed (so a decompression bomb is refused cheaply), and any
decoding failure becomes a 400. Remote URLs are refused: the server never fetches anything. The
bounds default to `serving.config.ServingLimits`'s; the server passes its configured ones.

    python -c "from serving.images import decode_images; print(decode_images(['data:image/png;base64,...']))"
"""

from __future__ import annotations

import base64
import binascii
import io

from PIL import Image, UnidentifiedImageError

from serving.config import ServingLimits
from serving.limits import RequestError

ALLOWED_FORMATS = ("PNG", "JPEG")
DEFAULT_LIMITS = ServingLimits()


def _payload(text: str, index: int) -> str:
    """The base64 part of a data URL or of a bare base64 string."""
    if text.startswith("data:"):
        header, sep, data = text.partition(",")
        if not sep or not header.endswith(";base64"):
            raise RequestError(
                400, f"images[{index}]: a data URL must look like data:image/png;base64,<data>", "image_format"
            )
        return data
    if text.startswith(("http://", "https://", "file:")):
        raise RequestError(
            400, f"images[{index}]: remote image URLs are not fetched; send a base64 data URL instead", "image_url"
        )
    return text


def decode_image(
    text: str,
    *,
    index: int = 0,
    max_bytes: int = DEFAULT_LIMITS.max_image_bytes,
    max_pixels: int = DEFAULT_LIMITS.max_image_pixels,
) -> Image.Image:
    """Decode one image; raises `RequestError` 413 over a limit, 400 when it is not a PNG/JPEG."""
    data = _payload(text.strip(), index)
    if len(data) * 3 // 4 > max_bytes:
        raise RequestError(
            413,
            f"images[{index}] is about {len(data) * 3 // 4} bytes, above max_image_bytes={max_bytes}",
            "max_image_bytes",
        )
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, f"images[{index}] is not valid base64", "image_decode") from None
    try:
        image = Image.open(io.BytesIO(raw))
        if image.format not in ALLOWED_FORMATS:
            raise RequestError(400, f"images[{index}] is {image.format}; send PNG or JPEG", "image_format")
        width, height = image.size
        if width * height > max_pixels:
            raise RequestError(
                413,
                f"images[{index}] is {width}x{height} = {width * height} pixels, above max_image_pixels={max_pixels}",
                "max_image_pixels",
            )
        return image.convert("RGB")
    except Image.DecompressionBombError:
        raise RequestError(
            413, f"images[{index}] has too many pixels (max_image_pixels={max_pixels})", "max_image_pixels"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise RequestError(
            400, f"images[{index}] is corrupt or not an image; send a PNG or JPEG", "image_decode"
        ) from None


def decode_images(
    b64_or_data_urls: list[str],
    *,
    max_images: int = DEFAULT_LIMITS.max_images,
    max_bytes: int = DEFAULT_LIMITS.max_image_bytes,
    max_pixels: int = DEFAULT_LIMITS.max_image_pixels,
) -> list[Image.Image]:
    """Decode every image of a request, in order (the order of the image placeholders)."""
    if len(b64_or_data_urls) > max_images:
        raise RequestError(
            400, f"{len(b64_or_data_urls)} images, above max_images={max_images}; send fewer", "max_images"
        )
    return [
        decode_image(t, index=i, max_bytes=max_bytes, max_pixels=max_pixels) for i, t in enumerate(b64_or_data_urls)
    ]


def to_data_url(image: Image.Image, *, fmt: str = "PNG") -> str:
    """Encode a PIL image as a data URL (for clients and tests)."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    mime = "image/png" if fmt == "PNG" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode()}"
