"""Drawing: every picture the package makes, from arrays it is handed.

Heatmaps and overlays (:mod:`.images`: ``perturb explain``'s four pictures, ``perturb export``'s
heatmap and overlay, the thumbnails of a report's galleries) and matplotlib figures
(:mod:`.plots`: mean deletion/insertion curves, localisation accuracy, gallery grids) on Agg
canvases (no pyplot, no global backend change). Nothing here reads a mask store or an image
file: :func:`pipeline.evaluation.stored_pictures` pairs stored rows with their images.
"""

from .images import (
    BOX_COLOUR,
    FOUND_BOX_COLOUR,
    OVERLAY_WEIGHT,
    draw_boxes,
    draw_dashed_boxes,
    explain_pictures,
    heatmap,
    jpeg_thumbnail,
    overlay,
    save_pictures,
    to_uint8,
)
from .plots import gallery_figure, new_figure, plot_curves, plot_localisation, png_bytes

__all__ = ["BOX_COLOUR", "FOUND_BOX_COLOUR", "OVERLAY_WEIGHT", "draw_boxes", "draw_dashed_boxes", "explain_pictures", "gallery_figure", "heatmap", "jpeg_thumbnail", "new_figure",
           "overlay", "plot_curves", "plot_localisation", "png_bytes", "save_pictures", "to_uint8"]
