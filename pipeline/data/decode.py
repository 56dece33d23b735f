"""Decoding one image file to RGB pixels, safely: every failure is an ImageReadError with a
short reason code (:data:`REASONS`), and decompression bombs are refused before allocation."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ImageReadError

MAX_DECODED_PIXELS: int = 250_000_000
"""Refuse an image when more pixels than this would be decoded (after JPEG draft reduction)."""

REASONS: dict[str, str] = {
    "missing": "the file does not exist",
    "not a file": "the path is a folder or a special file",
    "empty file": "the file has zero bytes",
    "not an image": "PIL cannot identify the file as an image",
    "truncated": "the file ends before the image data does",
    "too large": f"more than {MAX_DECODED_PIXELS:,} pixels would be decoded",
    "unreadable": "the file could not be read or decoded (see the message)",
}
"""Short codes stored as ``reason`` for skipped images, with what each means."""

# PIL's decompression-bomb limit is a module global read inside Image.open; we lift it only for
# the header parse (under a lock, restored in finally) and apply our own size rule instead.
_PIL_LIMIT_LOCK = threading.Lock()
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})



def _failure(reason: str, path: Path, detail: str) -> ImageReadError:
    """An ImageReadError whose ``reason`` attribute is one of :data:`REASONS`."""
    error = ImageReadError(f"cannot read image {str(path)!r}: {detail}")
    error.reason = reason  # type: ignore[attr-defined]
    return error


def _open(path: Path) -> Image.Image:
    """``Image.open`` with PIL's bomb check lifted (ours runs after the draft) and a reason."""
    if not path.exists():
        raise _failure("missing", path, "the file does not exist")
    if not path.is_file():
        raise _failure("not a file", path, "the path is not a regular file")
    if path.stat().st_size == 0:
        raise _failure("empty file", path, "the file is empty (0 bytes)")
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(path)
        except Image.UnidentifiedImageError:
            raise _failure("not an image", path, "PIL cannot identify it as an image") from None
        except OSError as error:
            raise _failure("unreadable", path, f"{type(error).__name__}: {error}") from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def decode_image(
    path: str | os.PathLike[str], draft_size: tuple[int, int] | None = None,
    max_pixels: int | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode an image file to RGB, possibly at a reduced scale.

    Args:
        path: the image file.
        draft_size: ``(H, W)``; when given, a JPEG is decoded by libjpeg at the smallest of
            1/1, 1/2, 1/4, 1/8 scale that still has at least ``draft_size`` pixels each way
            (other formats decode at full size). Use twice the final size, so that the final
            resize still averages several pixels.
        max_pixels: refuse ("too large") an image that would decode to more pixels than this;
            None: :data:`MAX_DECODED_PIXELS`.

    Returns:
        ``(image, (height, width))``: ``image`` is ``(h, w, 3)`` uint8 RGB, C-contiguous, of the
        decoded size; ``height``/``width`` are the file's original size.

    Raises:
        ImageReadError: with a ``reason`` attribute from :data:`REASONS`.
    """
    path = Path(path)
    limit = MAX_DECODED_PIXELS if max_pixels is None else int(max_pixels)
    with _open(path) as img:
        original = (img.height, img.width)
        short = _too_short(img, path.stat().st_size)  # before draft() changes the stated size
        try:
            if draft_size is not None and img.format in ("JPEG", "MPO"):  # MPO: camera JPEG
                img.draft("RGB", (int(draft_size[1]), int(draft_size[0])))
            if img.width * img.height > limit:
                raise _failure(
                    "too large", path, f"{img.width} x {img.height} pixels exceed the limit of "
                    f"{limit:,} decoded pixels (--max-pixels, pipeline.data.MAX_DECODED_PIXELS)"
                )
            if short:
                raise _failure("truncated", path, short)
            img.load()
            rgb = _to_rgb(img)
            return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)), original
        except ImageReadError:
            raise
        except Image.DecompressionBombError as error:  # PIL's own check on TIFF tiles, GIF frames
            raise _failure("too large", path, str(error)) from None
        except OSError as error:
            reason = "truncated" if "truncated" in str(error) else "unreadable"
            raise _failure(reason, path, f"{type(error).__name__}: {error}") from None
        except MemoryError:
            raise _failure("too large", path, "out of memory while decoding") from None
        except Exception as error:  # PIL plugins raise many types (SyntaxError, struct.error...)
            raise _failure("unreadable", path, f"{type(error).__name__}: {error}") from None


# Deflate expands at most 1032-fold, so a PNG needs at least 1 byte of data per 1032 bytes of
# pixels (a 1-bit image has 1/8 byte per pixel). A Huffman-coded JPEG spends at least 1 bit per
# 8 x 8 block (its DC code); 1 bit per 8 blocks leaves room for arithmetic coding as well.
_MIN_FILE_BYTES = {"PNG": lambda w, h: w * h / 8 / 1032, "JPEG": lambda w, h: (w / 8) * (h / 8) / 64}
_MIN_FILE_BYTES["MPO"] = _MIN_FILE_BYTES["JPEG"]


def _too_short(img: Image.Image, file_bytes: int) -> str:
    """Why a PNG or JPEG cannot hold the image its header states ("" when it can): a header
    edited to claim a huge size would otherwise be decoded (as grey or black, after allocating
    the whole image) before the missing data shows."""
    bound = _MIN_FILE_BYTES.get(img.format or "")
    need = bound(img.width, img.height) if bound else 0
    if file_bytes >= need:
        return ""
    return (f"the header states {img.width} x {img.height} pixels, which a {img.format} file of "
            f"{file_bytes:,} bytes cannot hold (at least {int(need):,} bytes)")


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file at full size.

    Returns:
        ``(H, W, 3)`` uint8 RGB in the file's stored pixel frame (EXIF orientation not applied);
        transparency composited on white; 16-bit scaled to 8 bit (see the module docstring).

    Raises:
        ImageReadError: missing, not a file, empty, not an image, truncated, too large, or
            otherwise undecodable; its ``reason`` attribute is one of :data:`REASONS`.
    """
    return decode_image(path)[0]


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB (alpha on white, 16-bit and float scaled rather than clipped)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(img).astype(np.int64)
        # round(v / 257) maps 0..65535 onto 0..255 exactly (65535 = 255 * 257)
        grey = ((np.clip(values, 0, 65535) + 128) // 257).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float32))
        scale = 255.0 if values.size and values.min() >= 0.0 and values.max() <= 1.0 else 1.0
        grey = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")
