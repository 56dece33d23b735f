"""Whole-store operations: :func:`merge_shards` (shard stores into one, sorted by ``index``) and
:func:`summary` (counts and mean scores)."""

from __future__ import annotations

import json
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import StoreError
from .reader import MaskStore
from .schema import COLUMNS, STATUS_OK
from .writer import MaskWriter

__all__ = ["merge_shards", "summary"]

MERGE_ROWS = 512  # rows copied per append when merging shards (bounds memory)


def merge_shards(
    paths: Iterable[str | os.PathLike[str]], out: str | os.PathLike[str], overwrite: bool = False
) -> Path:
    """Concatenate shard stores into one, rows sorted by ``index``.

    Args:
        paths: the shard files (e.g. every ``<stem>.shard-r-of-n.h5``).
        out: the merged store; it must not exist unless ``overwrite``.

    Returns:
        ``out`` as a Path. Its ``merged_from`` attribute lists the shard file names.

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
        raise StoreError(f"merged store {str(out)!r} exists; pass overwrite=True or another path")
    with ExitStack() as stack:
        stores = [stack.enter_context(MaskStore(p)) for p in paths]
        _check_shards_agree(stores)
        tables = [s.table().assign(_shard=k, _row=np.arange(len(s))) for k, s in enumerate(stores)]
        merged = pd.concat(tables, ignore_index=True).sort_values("index", kind="stable")
        _refuse_duplicates(merged, paths)
        first = next((s for s in stores if len(s)), stores[0])  # an empty shard has no extras yet
        with MaskWriter(out, first.config, first.model, first.source, first.mask_shape,
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


def summary(store: MaskStore | str | os.PathLike[str]) -> dict[str, Any]:
    """Counts and mean probabilities of a store.

    Returns:
        ``{"path", "done", "ok", "skipped", "skipped_by_reason", "means", "model", "source",
        "run_key", "config", "pending_parts"}``: ``done`` counts committed rows (ok or skipped),
        ``skipped_by_reason`` maps reason -> count, ``means`` maps p_original, p_perturbed,
        p_final, loss and the extra columns to their mean over ok rows (NaN values ignored;
        NaN when no row is ok); ``pending_parts`` counts batches not yet folded into the file.
    """
    if not isinstance(store, MaskStore):
        with MaskStore(store) as opened:
            return summary(opened)
    from collections import Counter

    ok = store.column("status") == STATUS_OK
    by_reason = Counter(str(r) for r in store.column("reason")[~ok])
    numeric = ["p_original", "p_perturbed", "p_final", "loss",
               *[c for c in store.columns if c not in COLUMNS]]
    means = {}
    for name in numeric:
        values = store.column(name)[ok].astype(np.float64)
        values = values[~np.isnan(values)]  # a NaN score must not hide the others
        means[name] = float(values.mean()) if values.size else float("nan")
    return {
        "path": str(store.path), "done": len(store), "ok": int(ok.sum()),
        "skipped": int((~ok).sum()), "skipped_by_reason": dict(sorted(by_reason.items())),
        "means": means, "model": store.model, "source": store.source, "run_key": store.run_key,
        "config": store.config, "pending_parts": store.pending_parts,
    }
