"""The report's provenance section: for each run, where its numbers come from (run folder, model,
method, data, store and its configuration, files and their times) and how many images it counts."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Sequence

from ..identity import flatten
from ..store import config_name
from .markup import Table, esc, num_cell, text_cell
from .tables import RunData


def mtime(path: Path) -> str:
    stamp = _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc)
    return stamp.isoformat(timespec="seconds")


def store_path(run: RunData) -> Path | None:
    """The run's mask store: next to its report files when there (a moved folder), else the
    path recorded at evaluation."""
    recorded = run.settings.get("store")
    if recorded:
        beside = run.folder / Path(str(recorded)).name
        if beside.is_file():
            return beside
        return Path(str(recorded))
    beside = run.folder / "masks.h5"
    return beside if beside.is_file() else None


def resolved(path: Any, base: Path | None = None) -> Any:
    """A recorded path shown absolute with symlinks resolved (relative ones against ``base``), so
    every path of the provenance is written the same way; other values (None, "<dict>") as they are."""
    if not isinstance(path, (str, Path)) or not str(path) or str(path).startswith("<"):
        return path
    path = Path(path)
    if base is not None and not path.is_absolute():
        path = base / path
    return str(path.resolve())


def plain(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if value is None:
        return "–"
    return str(value)


def _store_facts(run: RunData) -> dict[str, Any]:
    """``store.<attribute>`` of the run's store (its run key recomputed), or a ``store.note``: from
    what the evaluation recorded (``settings.store_attributes``); only an evaluation folder written
    before those were recorded has its store opened."""
    path = store_path(run)
    facts: dict[str, Any] = {"store.path": str(path) if path else None}
    attrs = run.settings.get("store_attributes")
    if not isinstance(attrs, dict):
        if path is None or not path.is_file():
            return {**facts, "store.note": "mask store not found"}
        from ..errors import PipelineError
        from ..store import MaskStore

        try:
            with MaskStore(path) as store:
                attrs = {**store.attrs, "run_key": store.run_key}
        except PipelineError as error:
            return {**facts, "store.note": f"cannot read: {error}"}
    facts.update({f"store.{key}": attrs[key] for key in _STORE_KEYS if key in attrs})
    if isinstance(attrs.get("versions"), dict):
        facts.update({f"versions.{k}": v for k, v in attrs["versions"].items()})
    return facts


_STORE_KEYS = ("created", "run_key", "source", "shard", "schema_version", "preset", "overrides")


def _provenance_rows(run: RunData) -> dict[str, Any]:
    settings = dict(run.settings)
    store_config = settings.pop("store_config", {}) or {}
    facts = _store_facts(run)
    # The name the store recorded; a store made before names were recorded gets the preset its
    # configuration matches.
    name = config_name(store_config, str(facts.get("store.preset") or ""), facts.get("store.overrides") or ())
    rows: dict[str, Any] = {
        "run folder": resolved(run.folder),
        "model": settings.pop("model", store_config.get("model")),
        "method / preset": name or "–",
        "target": store_config.get("target"),
        "data source (images)": resolved(settings.pop("data_root", None)),
        "boxes": resolved(settings.pop("boxes", None)),
        "per_image.parquet file time": mtime(run.folder / "per_image.parquet"),
    }
    store = facts.get("store.path")
    facts.update({key: resolved(facts.get(key), Path(store).parent if store else None)
                  for key in ("store.path", "store.source") if facts.get(key)})
    rows.update(facts)
    rows.update({f"counts.{k}": v for k, v in flatten(run.summary.get("counts") or {}).items()})
    rows.update({f"config.{k}": v for k, v in flatten(store_config).items()})
    rows.update({f"evaluation.{k}": v for k, v in flatten(settings).items()})
    return rows


_HEADLINE = ("run folder", "model", "method / preset", "target", "data source (images)", "boxes",
             "per_image.parquet file time", "store.path", "store.created", "store.run_key", "store.note")


def _image_counts(run: RunData) -> dict[str, int]:
    """Rows, ok, evaluated and every reason an image was skipped, read off the per-image table."""
    table = run.table
    counts = {"rows in the store": len(table), "ok in the store": int((table["status"] == "ok").sum()),
              "evaluated": int((table["eval_status"] == "ok").sum())}
    skipped = table[table["status"] != "ok"]
    for reason, n in skipped["reason"].fillna("").astype(str).replace("", "(no reason)").value_counts().items():
        counts[f"skipped in the store: {reason}"] = int(n)
    other = table[(table["status"] == "ok") & (table["eval_status"] != "ok")]
    for status, n in other["eval_status"].astype(str).value_counts().items():
        counts[f"not evaluated: {status}"] = int(n)
    if "loc_status" in table:
        evaluated = table[table["eval_status"] == "ok"]
        for status, n in evaluated["loc_status"].fillna("(none)").astype(str).value_counts().items():
            counts[f"localisation: {status}"] = int(n)
    return counts


def provenance_section(runs: Sequence[RunData]) -> str:
    headers = ["entry", *[run.name for run in runs]]
    counts = {run.name: _image_counts(run) for run in runs}
    images = Table("images", headers, "Images per run: counts and reasons for skipping (from per_image)")
    for key in dict.fromkeys(k for c in counts.values() for k in c):
        images.add([text_cell(key), *[num_cell(counts[run.name].get(key, 0), col=run.name, digits=0)
                                      for run in runs]], key=key)
    facts = {run.name: _provenance_rows(run) for run in runs}
    keys = list(dict.fromkeys(k for f in facts.values() for k in f))
    main = Table("provenance", headers, "What each run was made from and with")
    full = Table("settings", headers, "Every setting, flattened (rows whose values differ between runs are "
                 "marked)")
    for key in keys:
        values = [plain(facts[run.name].get(key)) for run in runs]
        table = main if key in _HEADLINE or key.startswith("versions.") else full
        table.add([text_cell(key)] + [text_cell(v, "path" if len(v) > 40 else "") for v in values], key=key)
        if len(runs) > 1 and len(set(values)) > 1:
            table.rows[-1] = table.rows[-1].replace("<tr ", '<tr class="differs" ', 1)
    configs = "".join(
        f"<details><summary>Full configuration of {esc(run.name)} (JSON)</summary>"
        f"<pre>{esc(json.dumps(run.settings.get('store_config', {}), indent=2, sort_keys=True))}</pre></details>"
        for run in runs)
    return (main.html() + images.html() + f"<details><summary>All settings ({len(full.rows)} rows)</summary>"
            f"{full.html()}</details>" + configs)
