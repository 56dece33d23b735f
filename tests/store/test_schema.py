"""The store schema is defined once (pipeline/store/schema.py): docs/store.md shows it, and the writer
writes it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np

from pipeline.store import MaskWriter
from pipeline.store.schema import ATTRIBUTES, COLUMNS, DATASETS, EXTRA, MASK, dtype_name

DOCS = Path(__file__).resolve().parents[2] / "docs" / "store.md"


def doc_table(heading: str) -> list[list[str]]:
    """The cells of the first Markdown table after ``## heading`` in docs/store.md (header dropped)."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]


def test_docs_dataset_table_is_the_schema():
    rows = doc_table("Datasets")
    expected = [[f"`{d.name}`", dtype_name(d.dtype), d.shape, d.meaning] for d in DATASETS]
    expected.append(["*extra*", dtype_name(EXTRA.dtype), EXTRA.shape, EXTRA.meaning])
    assert rows == expected
    assert MASK.shape == "(N, K, h, w)"


def test_docs_attribute_table_is_the_schema():
    rows = doc_table("File attributes")
    expected = [[f"`{a.name}`", a.kind, "yes" if a.always else "no", a.meaning] for a in ATTRIBUTES]
    assert rows == expected


def _batch(indices: list[int], k: int) -> tuple[dict, np.ndarray]:
    n = len(indices)
    rows = {"index": indices, "path": [f"d/img_{i}.JPEG" for i in indices], "height": [10] * n,
            "width": [12] * n, "label": [3] * n, "target": [3] * n, "status": ["ok"] * n,
            "reason": [""] * n, "p_original": [0.9] * n, "p_perturbed": [0.1] * n, "p_final": [0.2] * n,
            "loss": [1.5] * n, "area": [0.3] * n}
    return rows, np.random.default_rng(0).random((n, k, 7, 7))


def test_writer_writes_the_schema(tmp_path):
    path = tmp_path / "masks.h5"
    shape = (3, 7, 7)  # K = 3 masks per row, as extremal perturbation stores
    with MaskWriter(path, {"a": 1}, "toy", tmp_path, mask_shape=shape, merge_every=1) as writer:
        writer.append(*_batch([0, 1], 3))
        writer.append(*_batch([2], 3))
    with h5py.File(path, "r") as file:
        assert set(file) == {d.name for d in DATASETS} | {"area"}
        for dataset in DATASETS:
            stored = file[dataset.name]
            assert dtype_name(stored.dtype) == dtype_name(dataset.dtype), dataset.name
            if dtype_name(dataset.dtype) == "UTF-8 str":
                assert h5py.check_string_dtype(stored.dtype).encoding == "utf-8"
            assert stored.shape == ((3, *shape) if dataset is MASK else (3,)), dataset.name
        assert dtype_name(file["area"].dtype) == dtype_name(EXTRA.dtype)
        assert file["mask"].chunks == (1, *shape) and file["mask"].compression == "gzip"
        attrs = file.attrs
        assert set(attrs) == {a.name for a in ATTRIBUTES if a.always}
        assert tuple(attrs["mask_shape"]) == shape and int(attrs["rows"]) == 3
        assert json.loads(attrs["config"]) == {"a": 1}
        assert re.fullmatch(r"[0-9a-f]{16}", attrs["run_key"])
    assert list(COLUMNS) == [d.name for d in DATASETS if d is not MASK]
