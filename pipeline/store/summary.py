"""What a store holds, in a few numbers and one name: :func:`summary` (counts, skips by reason,
mean scores) and :func:`config_name` (the preset or method that made it)."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np

from .reader import MaskStore
from .schema import COLUMNS, STATUS_OK

__all__ = ["config_name", "summary"]


def config_name(config: Mapping[str, Any], preset: str = "", overrides: Sequence[str] = ()) -> str:
    """How a store's configuration is named, for people: ``baseline <name>`` for a baseline store;
    the recorded ``preset``, followed by ``with`` and its ``overrides`` when there are any; for a
    solver store made before the preset was recorded, the preset its configuration matches
    (:func:`pipeline.config.guess_preset`); "" for any other store.

    Args:
        config: the store's configuration (``MaskStore.config``).
        preset, overrides: the store's ``preset`` and ``overrides`` attributes ("" and () when absent).
    """
    if "baseline" in config:
        return f"baseline {config['baseline']}"
    if preset:
        return f"{preset} with {', '.join(overrides)}" if overrides else preset
    solver = config.get("solver")
    if not isinstance(solver, Mapping):
        return ""
    from ..config import guess_preset

    return guess_preset(solver)


def summary(store: MaskStore | str | os.PathLike[str]) -> dict[str, Any]:
    """Counts and mean probabilities of a store.

    Returns:
        ``{"path", "done", "ok", "skipped", "skipped_by_reason", "means", "model", "source",
        "run_key", "config", "preset", "pending_parts"}``: ``done`` counts committed rows (ok or
        skipped), ``skipped_by_reason`` maps reason -> count, ``means`` maps p_original,
        p_perturbed, p_final, loss and the extra columns to their mean over ok rows (NaN values
        ignored; NaN when no row is ok); ``preset`` is :func:`config_name`; ``pending_parts``
        counts batches not yet folded into the file.
    """
    if not isinstance(store, MaskStore):
        with MaskStore(store) as opened:
            return summary(opened)
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
        "config": store.config, "preset": config_name(store.config, store.preset, store.overrides),
        "pending_parts": store.pending_parts, "threads": int(store.attrs["threads"]) if "threads" in store.attrs else None,
    }
