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

import importlib
from typing import Any

from .decode import MAX_DECODED_PIXELS, REASONS, decode_image, load_image
from .discover import IMAGE_EXTENSIONS, ImageRecord, discover

# The torch side (datasets and loaders) loads on first use, so finding images and checking a
# command's input (before a model is loaded) does not import torch.
_TORCH_SIDE = {name: ".dataset" for name in ("ImageDataset", "collate", "make_loader", "read_input",
                                              "resize_pixels", "stop_workers", "to_input")}

__all__ = ["IMAGE_EXTENSIONS", "MAX_DECODED_PIXELS", "REASONS", "ImageDataset", "ImageRecord", "collate",
           "decode_image", "discover", "load_image", "make_loader", "read_input", "resize_pixels", "stop_workers",
           "to_input"]


def __getattr__(name: str) -> Any:
    if name not in _TORCH_SIDE:
        raise AttributeError(f"module 'pipeline.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_TORCH_SIDE[name], __name__), name)
    globals()[name] = value
    return value
