"""The HDF5 mask store: one row per image, appended batch by batch, safe to kill and resume
(docs/store.md).

Modules: :mod:`.schema` (datasets, attributes), :mod:`.files` (locks,
fsync, part files), :mod:`.writer` (:class:`MaskWriter`), :mod:`.reader` (:class:`MaskStore`),
:mod:`.merge` (:func:`merge_shards`), :mod:`.summary` (:func:`summary`, :func:`config_name`) and
:mod:`.repair` (``perturb repair``). Sharded runs, which write one store per shard and merge them,
are :mod:`pipeline.jobs.shards`. A store is tied to its run by the configuration's identity,
:func:`pipeline.identity.run_key` (re-exported here).
"""

from .files import parts_dir, shard_path, store_locked
from .merge import merge_shards
from .reader import MaskStore
from .schema import COLUMNS, SCHEMA_VERSION, STATUS_OK, STATUS_SKIPPED, canonical_json, config_diff, run_key
from .summary import config_name, summary
from .writer import MaskWriter

__all__ = ["COLUMNS", "SCHEMA_VERSION", "STATUS_OK", "STATUS_SKIPPED", "MaskStore", "MaskWriter", "canonical_json",
           "config_diff", "config_name", "merge_shards", "parts_dir", "run_key", "shard_path", "store_locked",
           "summary"]
