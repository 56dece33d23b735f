"""ImageNet-1k class vocabulary: wnids in model index order, and human-readable names.

The list ships with timm (``timm.data.ImageNetInfo``), so nothing is downloaded. Dataset folders
named by wnid map to model indices through this list, never through the order of the folders
present (a subset of 86 classes must not become indices 0..85).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import ConfigError


@dataclass(frozen=True)
class ClassVocabulary:
    """Class names of a classifier, in output-index order.

    Attributes:
        wnids: WordNet ids (``n01440764``) in index order; empty strings where unknown.
        names: short human-readable names in index order (``tench``).
    """

    wnids: tuple[str, ...]
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)

    @property
    def index_of_wnid(self) -> dict[str, int]:
        return _index(self.wnids)

    def resolve(self, target: str | int) -> int:
        """Turn a class index, wnid or class name into an output index.

        Raises:
            ConfigError: with close matches, when the target names no class.
        """
        if isinstance(target, int) or str(target).lstrip("-").isdigit():
            index = int(target)
            if not 0 <= index < len(self):
                raise ConfigError(f"target index {index} is out of range 0..{len(self) - 1}")
            return index
        text = str(target).strip()
        if text in self.index_of_wnid:
            return self.index_of_wnid[text]
        lowered = [n.lower() for n in self.names]
        if text.lower() in lowered:
            return lowered.index(text.lower())
        close = difflib.get_close_matches(text.lower(), lowered, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(f"target {text!r} is not a class index, wnid or class name{hint}")


@lru_cache(maxsize=None)
def _index(wnids: tuple[str, ...]) -> dict[str, int]:
    return {w: i for i, w in enumerate(wnids) if w}


@lru_cache(maxsize=1)
def imagenet_vocabulary() -> ClassVocabulary:
    """The 1000 ImageNet-1k classes in the standard index order (from timm's bundled lists).

    The lists are read from timm's package folder without importing timm (seconds of imports), so
    a ``--targets`` file is checked at once; the result is what ``timm.data.ImageNetInfo`` gives.
    """
    import importlib.util

    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the ImageNet class list ships with timm, which is not installed: pip install timm")
    info = Path(next(iter(spec.submodule_search_locations))) / "data" / "_info"
    wnids = tuple((info / "imagenet_synsets.txt").read_text(encoding="utf-8").splitlines())
    lemmas = dict(line.split("\t", 1) for line in
                  (info / "imagenet_synset_to_lemma.txt").read_text(encoding="utf-8").splitlines() if "\t" in line)
    names = tuple(lemmas[w].split(",")[0].strip() for w in wnids)
    return ClassVocabulary(wnids=wnids, names=names)


def read_synset_mapping(path: str | Path) -> ClassVocabulary:
    """Read a ``LOC_synset_mapping.txt``-style file (``n01440764 tench, Tinca tinca`` per line)."""
    wnids, names = [], []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        wnid, _, rest = line.strip().partition(" ")
        wnids.append(wnid)
        names.append(rest.split(",")[0].strip() or wnid)
    return ClassVocabulary(wnids=tuple(wnids), names=tuple(names))
