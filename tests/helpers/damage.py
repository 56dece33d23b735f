"""Damaged image files and odd folder entries, for the reliability tests and the fuzzing benchmark
(``benchmarks/run.py fuzz``, which runs ``perturb masks`` over 1,000+ of them).

:func:`make_damaged` writes damaged copies of given files, the kinds in turn (:data:`MUTATIONS`): bit
flips anywhere or in the header, truncation (after 1 or 2 bytes, inside the header, at the start of
the JPEG scan, in the middle, one byte short), header bytes replaced by garbage, garbage put before
the file, random bytes, a wrong magic number on a valid body, empty files, zeroed ranges, two ranges
swapped, garbage after the end, and headers edited to claim huge sizes. :func:`add_odd_entries`
adds dangling symbolic links, a folder named like an image, files with permissions 000, files whose
open must raise ``PermissionError`` (named with :data:`NO_PERMISSION`: a test or benchmark makes
``open`` refuse them, since root reads mode-000 files), names that are not valid UTF-8, a name with
a line break, markup and a 250-byte name, a FIFO named like an image (reading it would block), and
files to be deleted after the listing and before decoding (named with :data:`VANISH`).
"""

from __future__ import annotations

import os
import random
import struct
import zlib
from pathlib import Path
from typing import Callable

VANISH = "vanish"  # files with this in their name are deleted after listing
NO_PERMISSION = "noperm"  # opening files with this in their name raises PermissionError


def _flip(data: bytes, rng: random.Random, start: int = 0, stop: int | None = None) -> bytes:
    out = bytearray(data)
    stop = len(out) if stop is None else min(stop, len(out))
    for _ in range(rng.randint(1, 64)):
        i = rng.randrange(start, max(start + 1, stop))
        if i < len(out):
            out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def _truncate(data: bytes, rng: random.Random) -> bytes:
    scan = data.find(b"\xff\xda")  # JPEG start of scan
    cuts = [1, 2, rng.randint(3, 40), rng.randint(40, 300), len(data) // 2, len(data) - 1,
            rng.randrange(1, len(data))] + ([scan, scan + 12] if scan > 0 else [])
    return data[: max(1, min(len(data) - 1, rng.choice(cuts)))]


def _garbage_header(data: bytes, rng: random.Random) -> bytes:
    n = min(len(data), rng.choice([4, 16, 64, 512]))
    return rng.randbytes(n) + data[n:]


def _prepend(data: bytes, rng: random.Random) -> bytes:
    return rng.randbytes(rng.randint(1, 256)) + data


def _random_bytes(data: bytes, rng: random.Random) -> bytes:
    return rng.randbytes(rng.choice([1, 7, 100, 5000, 60000]))


MAGICS = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
          b"RIFF\x00\x00\x00\x00WEBP", b"%PDF-1.4", b"PK\x03\x04"]


def _wrong_magic(data: bytes, rng: random.Random) -> bytes:
    magic = rng.choice(MAGICS)
    return magic + data[len(magic):] if rng.random() < 0.5 else magic + data


def _empty(data: bytes, rng: random.Random) -> bytes:
    return b""


def _zero_range(data: bytes, rng: random.Random) -> bytes:
    start = rng.randrange(len(data))
    stop = min(len(data), start + rng.choice([1, 16, 256, 4096, len(data)]))
    return data[:start] + bytes(stop - start) + data[stop:]


def _swap(data: bytes, rng: random.Random) -> bytes:
    n = max(1, len(data) // rng.choice([4, 8, 16]))
    a, b = sorted(rng.sample(range(0, max(2, len(data) - n)), 2))
    if b - a < n:
        return data[::-1]
    return data[:a] + data[b:b + n] + data[a + n:b] + data[a:a + n] + data[b + n:]


def _trailing(data: bytes, rng: random.Random) -> bytes:
    return data + rng.randbytes(rng.randint(1, 4096))


def _huge_header(data: bytes, rng: random.Random) -> bytes:
    """Edit the stated size to something huge (JPEG SOF, PNG IHDR with a valid CRC, GIF, BMP)."""
    out = bytearray(data)
    side = rng.choice([30000, 65500, 100000])
    sof = next((i for i in range(len(out) - 9) if out[i] == 0xFF and out[i + 1] in (0xC0, 0xC1, 0xC2)), -1)
    if sof >= 0:
        out[sof + 5:sof + 9] = struct.pack(">HH", min(side, 65535), min(side, 65535))
    elif out[:8] == b"\x89PNG\r\n\x1a\n":
        out[16:24] = struct.pack(">II", side, side)
        out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])) & 0xFFFFFFFF)
    elif out[:3] == b"GIF":
        out[6:10] = struct.pack("<HH", 65535, 65535)
    elif out[:2] == b"BM":
        out[18:26] = struct.pack("<ii", side, side)
    return bytes(out)


MUTATIONS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "bitflip": lambda d, r: _flip(d, r),
    "bitflip_header": lambda d, r: _flip(d, r, 0, 64),
    "truncate": _truncate,
    "garbage_header": _garbage_header,
    "garbage_before": _prepend,
    "random_bytes": _random_bytes,
    "wrong_magic": _wrong_magic,
    "empty": _empty,
    "zeroed_range": _zero_range,
    "swapped_ranges": _swap,
    "garbage_after": _trailing,
    "huge_header": _huge_header,
}
"""Each kind of damage: ``(file bytes, rng) -> damaged bytes``."""


def make_damaged(folder: Path, originals: list[tuple[bytes, str]], count: int, seed: int = 0) -> dict[str, str]:
    """Write ``count`` damaged files into ``folder``; returns ``{file name: mutation kind}``."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    kinds = list(MUTATIONS)
    made = {}
    for i in range(count):
        kind = kinds[i % len(kinds)]
        data, ext = originals[rng.randrange(len(originals))]
        name = f"{kind}_{i:05d}{ext}"
        (folder / name).write_bytes(MUTATIONS[kind](data, rng))
        made[name] = kind
    return made


def add_odd_entries(folder: Path, original: bytes) -> dict[str, str]:
    """The odd entries of the module docstring; returns ``{name (as str): kind}``."""
    made: dict[str, str] = {}

    def put(name: str | bytes, kind: str, data: bytes | None = original) -> Path:
        path = Path(os.fsdecode(os.path.join(os.fsencode(folder), os.fsencode(name))))
        if data is not None:
            path.write_bytes(data)
        made[path.name] = kind
        return path

    for i in range(3):
        link = Path(folder) / f"dangling_{i}.JPEG"
        link.symlink_to(folder / f"does_not_exist_{i}.JPEG")
        made[link.name] = "dangling symlink"
    (folder / "a_folder.JPEG").mkdir()
    (folder / "a_folder.JPEG" / "inside.JPEG").write_bytes(original)
    made["a_folder.JPEG/inside.JPEG"] = "file inside a folder named like an image"
    for i in range(2):
        put(f"mode000_{i}.JPEG", "permissions 000 (root still reads it)").chmod(0)
        put(f"{NO_PERMISSION}_{i}.JPEG", "open raises PermissionError")
    put(b"caf\xe9.JPEG", "name not UTF-8 (Latin-1)")
    put(b"\xff\xfe\x80.png", "name not UTF-8 (random bytes)", stated_png())
    put(b"na\xefve_\xe9t\xe9.jpg", "name not UTF-8, readable")
    put("line\nbreak.JPEG", "line break in the name")
    put("<i>markup &amp; | `tick` *star*.JPEG", "Markdown/HTML characters in the name")
    put("x" * 245 + ".JPEG", "250-byte name")
    put("unicode_\u00e9\u4e2d.JPEG", "valid UTF-8 name")
    fifo = Path(folder) / "fifo.JPEG"
    os.mkfifo(fifo)
    made[fifo.name] = "FIFO named like an image"
    for i in range(2):
        put(f"{VANISH}_{i}.JPEG", "deleted after listing")
    put("bomb_100000.png", "PNG header states 100,000 x 100,000", stated_png(100000, 100000))
    return made


def stated_png(width: int = 2, height: int = 2) -> bytes:
    """A PNG whose header states ``width`` x ``height`` (with a valid CRC), with the pixel data of a
    2 x 2 image: a decompression bomb by its stated size only."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" + b"\x80" * 6) * 2) + \
        chunk(b"IEND", b"")
