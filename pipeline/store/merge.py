"""Merging shard stores into one store, rows sorted by ``index`` (:func:`merge_shards`)."""

from __future__ import annotations

import json
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import StoreError
from ..identity import PROVENANCE
from .reader import MaskStore
from .writer import MaskWriter

__all__ = ["merge_shards"]

MERGE_ROWS = 512  # rows copied per append when merging shards (bounds memory)


def merge_shards(
    paths: Iterable[str | os.PathLike[str]], out: str | os.PathLike[str], overwrite: bool = False
) -> Path:
    """Concatenate shard stores into one, rows sorted by ``index``.

    Args:
        paths: the shard files (e.g. every ``<stem>.shard-r-of-n.h5``).
        out: the merged store; it must not exist unless ``overwrite``.

    Returns:
        ``out`` as a Path. Its ``merged_from`` attribute lists the shard file names; its
        ``preset`` and ``overrides`` are the first non-empty shard's.

    Raises:
        StoreError: no paths, ``out`` exists, the shards differ in run_key, model, mask shape,
            input size or extra columns, ranks are missing or repeated, or an ``index`` appears
            in more than one row.
    """
    import pandas as pd

    paths, out = [Path(p) for p in paths], Path(out)
    if not paths:
        raise StoreError("merge_shards() needs at least one shard file")
    if out.exists() and not overwrite:
        raise StoreError(f"merged store {str(out)!r} exists; pass overwrite=True (--overwrite) or another out")
    with ExitStack() as stack:
        stores = [stack.enter_context(MaskStore(p)) for p in paths]
        _check_shards_agree(stores)
        tables = [s.table().assign(_shard=k, _row=np.arange(len(s))) for k, s in enumerate(stores)]
        merged = pd.concat(tables, ignore_index=True).sort_values("index", kind="stable")
        _refuse_duplicates(merged, paths)
        first = next((s for s in stores if len(s)), stores[0])  # an empty shard has no extras yet
        config = {**first.config, PROVENANCE: {"preset": first.preset, "overrides": first.overrides}}
        with MaskWriter(out, config, first.model, first.source, first.mask_shape,
                        overwrite=overwrite, input_size=first.input_size,
                        attrs={"merged_from": json.dumps([p.name for p in paths])}) as writer:
            for start in range(0, len(merged), MERGE_ROWS):
                part = merged.iloc[start : start + MERGE_ROWS]
                masks = np.empty((len(part), *first.mask_shape), dtype=np.float16)
                for shard, group in part.groupby("_shard", sort=False):
                    where = np.flatnonzero(part["_shard"].to_numpy() == shard)
                    masks[where] = stores[shard].read_masks(group["_row"].to_numpy())
                columns = {n: part[n].to_numpy() for n in first.columns}
                for name in ("path", "status", "reason"):
                    columns[name] = [str(v) for v in columns[name]]
                writer.append(columns, masks)
    return out


def _check_shards_agree(stores: list[MaskStore]) -> None:
    first = next((s for s in stores if len(s)), stores[0])
    for store in stores:
        for name in ("run_key", "model", "mask_shape", "input_size", "columns"):
            if name == "columns" and not len(store):
                continue  # a shard with no images (more shards than images) has no extra columns
            if getattr(store, name) != getattr(first, name):
                raise StoreError(
                    f"cannot merge {str(store.path)!r} with {str(first.path)!r}: {name} differs "
                    f"({getattr(store, name)!r} vs {getattr(first, name)!r}); merge only shards "
                    "of one run"
                )
    shards = [s.shard for s in stores if s.shard]
    if shards:
        worlds = {int(s.split("-of-")[1]) for s in shards}
        ranks = sorted(int(s.split("-of-")[0]) for s in shards)
        if len(worlds) != 1 or ranks != list(range(worlds.pop())):
            raise StoreError(f"shard files cover ranks {shards}; pass each of the run's "
                             "shards exactly once")


def _refuse_duplicates(merged: Any, paths: list[Path]) -> None:
    repeated = merged[merged["index"].duplicated(keep=False)]
    if len(repeated):
        rows = repeated.head(6)
        which = ", ".join(
            f"index {i} in {paths[k].name}" for i, k in zip(rows["index"], rows["_shard"])
        )
        raise StoreError(f"cannot merge: {repeated['index'].nunique()} indices appear in more "
                         f"than one row ({which}); each image must be solved by one shard only")
