"""What ``perturb inspect`` says about a mask store, or about a sharded run not merged yet."""

from __future__ import annotations

import json
from pathlib import Path

from ..evaluation import perturbation_strength
from ..identity import flatten
from ..names import display_name
from ..store import MaskStore, summary
from .shards import progress_lines, read_plan

__all__ = ["inspect_lines"]


def inspect_lines(store: str | Path) -> list[str]:
    """Lines describing ``store``: counts, skips by reason, unfolded batches, mean columns, the
    perturbation-strength diagnostic and the configuration; before them, for a sharded run
    writing into ``store``, each shard's progress (alone while nothing is merged).

    Raises:
        StoreError: the store (or the sharded run's plan or a shard) cannot be read.
    """
    store = Path(store)
    lines = []
    if read_plan(store) is not None:
        lines = progress_lines(store)
        if not store.is_file():
            return lines
    with MaskStore(store) as opened:
        info = summary(opened)
        strength = perturbation_strength(opened.table())
    lines += [f"store      {display_name(str(store))}",
              f"model      {info['model']}",
              f"preset     {info['preset'] or '–'}",
              f"source     {display_name(info['source'])}",
              f"images     {info['done']} ({info['ok']} ok, {info['skipped']} skipped)"]
    lines += [f"  skipped  {count} {reason}" for reason, count in info["skipped_by_reason"].items()]
    if info["pending_parts"]:
        lines.append(f"unfolded   {info['pending_parts']} batches in {store}.parts/ (a run that "
                     "stopped, or is still running; they are counted above, and the run folds them in)")
    lines += [f"mean {name:12s} {value:.4f}" for name, value in info["means"].items()]
    lines.append(strength.line())
    lines += config_lines(info["config"])
    lines.append(f"threads    {info['threads']}" if info.get("threads") else "threads    not recorded")
    return lines


def config_lines(config: dict) -> list[str]:
    """The configuration, one ``key value`` line per field (dotted keys, sorted), under ``config``."""
    flat = flatten(config)
    width = max((len(key) for key in flat), default=0)
    return ["config"] + [f"  {key.ljust(width)}  {json.dumps(value)}" for key, value in sorted(flat.items())]
