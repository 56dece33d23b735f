"""Finding images, decoding them robustly, and batching them for the solver.

Three kinds of input are understood by :func:`discover`:

* an ImageNet-style folder ``root/<wnid>/<image>``: the label is the **model's** class index of
  the wnid (through a :class:`~pipeline.imagenet.ClassVocabulary`, the 1000-wnid list in index
  order), never the position of the folder among the folders present;
* a flat folder of images (label -1);
* a text file listing image paths, one per line.

Decoding (:func:`load_image`) always gives ``(H, W, 3)`` uint8 RGB in the file's stored pixel
frame, and turns every way a file can be bad into an :class:`~pipeline.errors.ImageReadError`
whose ``reason`` attribute is a short code (:data:`REASONS`). :class:`ImageDataset` never raises
for a bad image: it returns a zero image with ``ok=False`` and that code, so one broken file
cannot stop a dataset-wide run, and the store records why the image was skipped.

Decisions (all documented where they are made):

* **Transparency** (RGBA, LA, palette with a transparent colour) is composited on **white**, which
  is how viewers show such images; the colour stored under fully transparent pixels is often
  black or garbage and would otherwise become part of the image the model sees.
* **16-bit** greyscale (PIL modes ``I;16*`` and ``I``) is scaled to 8 bit by ``round(v / 257)``
  (65535 -> 255, 32768 -> 128), because PIL's own ``convert`` clips every value above 255 to white.
  32-bit float images (mode ``F``) are taken as [0, 1] when all values lie there, else [0, 255].
* **EXIF orientation is not applied**: ImageNet boxes and jacobgil's script both use the stored pixel frame.
* **Colour profiles** (ICC) are ignored; CMYK is converted by PIL's formula.
* **Huge images**: JPEGs are decoded at a reduced scale (libjpeg's DCT scaling, ``Image.draft``)
  when a target size is given, so a 10000 x 10000 JPEG decodes at 1250 x 1250. PIL's global
  decompression-bomb check (a warning at 89 Mpx, an error at 179 Mpx) is replaced by ours: the
  image is refused ("too large") only when the pixels actually decoded exceed
  :data:`MAX_DECODED_PIXELS` (250 million, about 750 MB as RGB; ``max_pixels`` of
  :func:`decode_image` and :class:`ImageDataset`, ``perturb masks --max-pixels``). The check runs
  on the size the header states, before any pixel is decoded, so a file whose header claims
  100,000 x 100,000 pixels is refused at once whatever its format; a JPEG's stated size is first
  divided by its draft scale (at most 8, so a 12,000 x 12,000 JPEG decodes at 1,500 x 1,500).
* **Resizing** (:class:`ImageDataset`) is jacobgil's: straight to ``size`` without cropping or
  keeping the aspect ratio, with PIL's bilinear filter on the uint8 image. PIL widens the filter
  when shrinking, so downscaling is antialiased (as torchvision's PIL path is). Images smaller than
  the target (even 5 x 5 px) are processed, resized up: the solver works at the target size anyway.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

from .errors import ConfigError, ImageReadError

if TYPE_CHECKING:
    from .imagenet import ClassVocabulary

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_DECODED_PIXELS",
    "REASONS",
    "ImageRecord",
    "discover",
    "load_image",
    "decode_image",
    "ImageDataset",
    "collate",
    "make_loader",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
)
"""File extensions (lower case) taken as images when a folder is scanned."""

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


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset.

    Attributes:
        path: absolute path of the file (symlinks are not resolved).
        relpath: path relative to the source root, POSIX separators; for a file list, the line
            as written. This is the key stored in the mask store.
        label: the model's class index, -1 when unknown.
    """

    path: Path
    relpath: str
    label: int = -1


# --------------------------------------------------------------------------------------------
# discovery


def discover(
    source: str | os.PathLike[str],
    vocabulary: ClassVocabulary | None = None,
    limit: int | None = None,
) -> list[ImageRecord]:
    """List the images of a dataset in a deterministic order (sorted by ``relpath``).

    Args:
        source: a folder (ImageNet-style ``root/<wnid>/<image>``, flat, or a mix: images directly
            in ``root`` get label -1), a text file listing image paths one per line (relative
            paths are resolved against the file's folder; blank lines and lines starting with
            ``#`` are ignored; every listed path is taken, unreadable ones are recorded later),
            or a single image file.
        vocabulary: maps the wnid naming an image's parent folder to the model's index;
            defaults to ImageNet-1k (:func:`pipeline.imagenet.imagenet_vocabulary`, loaded only
            when some image sits in a subfolder). A parent folder whose name is not a known
            wnid gives label -1. In a file list the listed path's parent folder is used the
            same way (``n01440764/x.JPEG`` gets label 0).
        limit: keep only the first ``limit`` images (after sorting).

    Folders are scanned recursively, following symbolic links; hidden files and folders (names
    starting with ``.``) are skipped, and images are recognised by :data:`IMAGE_EXTENSIONS`
    (case-insensitive).

    Raises:
        ImageReadError: the source does not exist or holds no images.
        ConfigError: ``limit`` is not positive, or a file list names a path twice.
    """
    if limit is not None and (isinstance(limit, bool) or int(limit) < 1):
        raise ConfigError(f"limit must be a positive number of images or None, got {limit!r}")
    root = Path(source).expanduser()
    if not root.exists():
        raise ImageReadError(
            f"image source {str(root)!r} does not exist; pass an ImageNet-style folder, "
            "a folder of images or a text file listing image paths"
        )
    if root.is_dir():
        pairs = _scan_folder(root)
        kind = f"folder {str(root)!r} holds no images (extensions {_extension_list()})"
    elif root.suffix.lower() in IMAGE_EXTENSIONS:
        pairs = [(Path(os.path.abspath(root)), root.name)]
        kind = ""
    else:
        pairs = _read_file_list(root)
        kind = f"file list {str(root)!r} names no images (all lines blank or comments)"
    if not pairs:
        raise ImageReadError(f"image {kind}; check the path")
    pairs.sort(key=lambda pair: pair[1])
    if limit is not None:
        pairs = pairs[: int(limit)]
    return _label(pairs, vocabulary)


def _extension_list() -> str:
    return ", ".join(sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS))


def _scan_folder(root: Path) -> list[tuple[Path, str]]:
    """``(absolute path, relpath)`` of every image file below ``root``."""
    found = []
    base = os.path.abspath(root)
    for folder, dirs, files in os.walk(base, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            full = os.path.join(folder, name)
            found.append((Path(full), Path(os.path.relpath(full, base)).as_posix()))
    return found


def _read_file_list(listing: Path) -> list[tuple[Path, str]]:
    """``(absolute path, line as written)`` for every path a text file lists."""
    try:
        text = listing.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as error:
        raise ImageReadError(
            f"cannot read {str(listing)!r} as a UTF-8 text file listing image paths ({error}); "
            "pass a folder, an image, or a text file with one image path per line"
        ) from None
    base = Path(os.path.abspath(listing.parent))
    seen: dict[str, int] = {}
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if entry in seen:
            raise ConfigError(
                f"file list {str(listing)!r} names {entry!r} twice (lines {seen[entry]} and "
                f"{number}); remove the duplicate so each image has one row"
            )
        seen[entry] = number
        path = Path(entry).expanduser()
        pairs.append((Path(os.path.abspath(path if path.is_absolute() else base / path)), entry))
    return pairs


def _label(
    pairs: list[tuple[Path, str]], vocabulary: ClassVocabulary | None
) -> list[ImageRecord]:
    """Attach labels from the parent folder name of each relpath (-1 when none or unknown)."""
    needs_labels = any("/" in relpath for _, relpath in pairs)
    if needs_labels and vocabulary is None:
        from .imagenet import imagenet_vocabulary  # timm import, only when folders need labels

        vocabulary = imagenet_vocabulary()
    index = vocabulary.index_of_wnid if needs_labels and vocabulary is not None else {}
    records = []
    for path, relpath in pairs:
        parent = relpath.rsplit("/", 2)[-2] if "/" in relpath else ""
        records.append(ImageRecord(path=path, relpath=relpath, label=index.get(parent, -1)))
    return records


# --------------------------------------------------------------------------------------------
# decoding


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


# --------------------------------------------------------------------------------------------
# dataset and loader


def _check_size(size: int | Sequence[int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                 for s in pair):
        raise ConfigError(f"size must be a positive int or (height, width) of ints, got {size!r}")
    return pair  # type: ignore[return-value]


class ImageDataset(Dataset):
    """Images of a record list, decoded and resized for the solver; bad files become flagged rows.

    Args:
        records: from :func:`discover`.
        size: ``(H, W)`` (or one int for a square) the images are resized to, without cropping
            or keeping the aspect ratio, with PIL's antialiased bilinear filter.
        max_pixels: images that would decode to more pixels are skipped as "too large" (see
            :func:`decode_image`); None: :data:`MAX_DECODED_PIXELS`.

    ``dataset[i]`` is a dict:

    * ``image``: float32 tensor ``(3, H, W)`` in [0, 1], RGB, **not** normalised (the model
      wrapper normalises on the device); all zeros when ``ok`` is False;
    * ``index``: ``i``, the position in ``records`` (the store's row key);
    * ``height``, ``width``: the original size in pixels (0 when the file could not be read);
    * ``label``: the record's label (-1 unknown);
    * ``ok``: whether the image was decoded; ``reason``: "" or a code from :data:`REASONS`.
    """

    def __init__(self, records: Sequence[ImageRecord], size: int | Sequence[int] = (224, 224),
                 max_pixels: int | None = None):
        self.records = list(records)
        self.size = _check_size(size)
        if max_pixels is not None and (isinstance(max_pixels, bool) or int(max_pixels) < 1):
            raise ConfigError(f"max_pixels must be a positive number of pixels, got {max_pixels!r}")
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        record = self.records[i]
        height, width = self.size
        item: dict[str, Any] = {"index": int(i), "label": int(record.label)}
        try:
            pixels, (orig_h, orig_w) = decode_image(record.path, draft_size=(2 * height, 2 * width),
                                                    max_pixels=self.max_pixels)
        except ImageReadError as error:
            item.update(image=torch.zeros(3, height, width), height=0, width=0, ok=False,
                        reason=getattr(error, "reason", "unreadable"))
            return item
        if pixels.shape[:2] != (height, width):
            resized = Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(resized)
        image = torch.from_numpy(np.array(pixels, copy=True)).permute(2, 0, 1).float().div_(255.0)
        item.update(image=image.contiguous(), height=orig_h, width=orig_w, ok=True, reason="")
        return item


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch :class:`ImageDataset` items.

    Returns:
        ``image`` float32 ``(B, 3, H, W)``; ``index``, ``height``, ``width``, ``label`` int64
        ``(B,)``; ``ok`` bool ``(B,)``; ``reason`` list of ``B`` str.
    """
    batch: dict[str, Any] = {"image": torch.stack([item["image"] for item in items])}
    for key in ("index", "height", "width", "label"):
        batch[key] = torch.tensor([item[key] for item in items], dtype=torch.int64)
    batch["ok"] = torch.tensor([item["ok"] for item in items], dtype=torch.bool)
    batch["reason"] = [item["reason"] for item in items]
    return batch


def make_loader(
    dataset: ImageDataset,
    batch_size: int,
    workers: int = 2,
    pin_memory: bool | None = None,
    indices: Sequence[int] | None = None,
) -> DataLoader:
    """A DataLoader over ``dataset`` (or the subset ``indices``, in the given order), unshuffled.

    Args:
        dataset: the images.
        batch_size: images per batch (the last batch may be smaller).
        workers: decoding processes; 0 decodes in the calling process. Workers persist between
            epochs and prefetch 2 batches each.
        pin_memory: page-locked batches for faster host-to-GPU copies; defaults to
            ``torch.cuda.is_available()``.
        indices: positions in ``dataset`` to load, e.g. the images not yet done when resuming.
            Items keep their original ``index``.

    Raises:
        ConfigError: ``batch_size`` < 1, ``workers`` < 0, or an index out of range.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(
            f"workers must be an int >= 0 (0 = decode in this process), got {workers!r}"
        )
    source: Dataset = dataset
    if indices is not None:
        chosen = [int(i) for i in indices]
        bad = [i for i in chosen if not 0 <= i < len(dataset)]
        if bad:
            raise ConfigError(
                f"indices {bad[:5]} are out of range for a dataset of {len(dataset)} images"
            )
        source = Subset(dataset, chosen)
    return DataLoader(
        source,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available() if pin_memory is None else bool(pin_memory),
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None,
    )
