"""The one result writer of the benchmarks: CSV files whose every row carries the exact command, the
machine, the torch version, the date and the load average when the run started.

Where files go is the same in every mode: ``--out DIR`` (a folder) and ``--name STEM``; a mode's
main table is ``DIR/STEM.csv`` and its other files sit beside it as ``DIR/STEM-<part>.csv`` (or
``.png``). A few modes keep the file names their committed results already have (``peers``,
``metric-parity``); they pass the whole file name.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import torch

from benchmarks.common import cell, load_average, machine, now


class Results:
    """Where one run's results are written, and the context every row of them records.

    Attributes:
        folder: ``--out``, created on the first write.
        name: ``--name`` with ``{device}`` replaced by the device type.
        info: :func:`benchmarks.common.machine` of the run's device.
        context: the columns put in front of every row: ``command``, ``machine``, ``cpu``, ``cores``,
            ``gpu``, ``torch``, ``date`` and ``loadavg_start`` (1/5/15-minute load average).
    """

    def __init__(self, folder: Path, name: str, device: torch.device, command: str):
        self.folder = Path(folder)
        self.name = name.format(device=device.type)
        self.info = machine(device)
        self.context = {"command": command, "machine": self.info["machine"], "cpu": self.info["cpu"],
                        "cores": self.info["cores"], "gpu": self.info.get("gpu", ""), "torch": self.info["torch"],
                        "date": now(), "loadavg_start": load_average()}

    def path(self, part: str = "", suffix: str = ".csv") -> Path:
        """``folder/name.csv``, or ``folder/name-part<suffix>`` for a mode's other files."""
        return self.folder / f"{self.name}{'-' + part if part else ''}{suffix}"

    def write(self, rows: Sequence[dict[str, Any]], part: str = "", file: str | None = None) -> Path:
        """Write ``rows`` (dicts; the union of their keys, in first-seen order, after the context
        columns a row does not set itself) to :meth:`path` of ``part``, or to ``folder/file``.
        Modes call it again as rows come in, so a run cut short keeps what it measured."""
        path = self.folder / file if file else self.path(part)
        path.parent.mkdir(parents=True, exist_ok=True)
        full = [{**{k: v for k, v in self.context.items() if k not in row}, **row} for row in rows]
        fields: list[str] = []
        for row in full:
            fields += [key for key in row if key not in fields]
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            for row in full:
                writer.writerow({key: cell(row.get(key, "")) for key in fields})
        return path
