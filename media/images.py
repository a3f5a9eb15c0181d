"""Cover art: validated by decoding it fully (Pillow), then a 96x96 WebP thumbnail and a display size.

An image whose header declares more than MAX_PIXELS pixels is refused before decoding (a small
file can decompress to gigabytes); Pillow's own DecompressionBombWarning is treated as an error.
Decoding the whole image catches truncated and corrupt files.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # 40 megapixels: far above any cover, far below a memory problem
THUMB_SIZE = (96, 96)
DISPLAY_MAX = 1200
FORMATS = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}


class ImageError(ValueError):
    """The image cannot be used; the message says why."""


@dataclass
class Renditions:
    width: int
    height: int
    format: str
    thumb: bytes    # 96x96 WebP
    display: bytes  # at most DISPLAY_MAX on its long side, WebP


def process_image(path: Path, *, max_pixels: int = MAX_PIXELS) -> Renditions:
    """Decode the image at `path` and make its renditions (CPU-bound: call in a thread)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as probe:
                width, height = probe.size
                fmt = FORMATS.get(probe.format or "")
                if fmt is None:
                    raise ImageError(f"unsupported image format {probe.format}")
                if width <= 0 or height <= 0 or width * height > max_pixels:
                    raise ImageError(
                        f"the image is {width}x{height} pixels; the limit is {max_pixels} pixels"
                    )
                probe.verify()  # structure and checksums (PNG CRCs) without decoding pixels
            with Image.open(path) as opened:
                opened.load()  # the whole decode: truncated data fails here
                img = ImageOps.exif_transpose(opened)
                img = img.convert("RGBA" if _has_alpha(img) else "RGB")
                thumb = ImageOps.fit(img, THUMB_SIZE, method=Image.Resampling.LANCZOS)
                display = img.copy()
                display.thumbnail((DISPLAY_MAX, DISPLAY_MAX), Image.Resampling.LANCZOS)
                return Renditions(
                    width=width,
                    height=height,
                    format=fmt,
                    thumb=_webp(thumb),
                    display=_webp(display),
                )
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(f"the image decodes to too many pixels: {exc}") from None
        except UnidentifiedImageError:
            raise ImageError("not a readable image") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(f"the image is truncated or corrupt: {exc}") from None


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)


def _webp(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "WEBP", quality=85, method=4)
    return out.getvalue()
