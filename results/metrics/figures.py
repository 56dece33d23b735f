"""The two figures of results/metrics/README.md from evaluated run folders: ROAD's mean MoRF/LeRF
curves (``road.png``) and the randomisation curves (``randomisation.png``), drawn by the report's
own figure functions.

    PYTHONPATH=. python results/metrics/figures.py OUT RUN_FOLDER ...
"""

import sys
from pathlib import Path

from pipeline.pictures import png_bytes
from pipeline.report.figures import randomisation_figure, road_figure
from pipeline.report.tables import load_runs, randomisation_of, road_curves_of

out, folders = Path(sys.argv[1]), [Path(f) for f in sys.argv[2:]]
runs = load_runs(folders)
road = {run.name: road_curves_of(run) for run in runs}
(out / "road.png").write_bytes(png_bytes(road_figure({k: v for k, v in road.items() if v is not None}), dpi=100))
checks = {run.name: randomisation_of(run) for run in runs}
(out / "randomisation.png").write_bytes(png_bytes(randomisation_figure({k: v for k, v in checks.items() if v}),
                                                  dpi=100))
