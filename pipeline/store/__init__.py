"""The HDF5 mask store: one row per image, appended batch by batch, safe to kill and resume
(docs/store.md)."""

from .store import (COLUMNS, STATUS_OK, STATUS_SKIPPED, MaskStore, MaskWriter, canonical_json, merge_shards,
                    parts_dir, run_key, shard_path, summary)

__all__ = ["COLUMNS", "STATUS_OK", "STATUS_SKIPPED", "MaskStore", "MaskWriter", "canonical_json", "merge_shards",
           "parts_dir", "run_key", "shard_path", "summary"]
