"""Simulated annotators: where a user who knows the truth would click.

- ``dial_click``: DIAL's agent. One click in a patch, at the centre of the largest connected
  region where the prediction is wrong, carrying the true class.
- ``sial_clicks``: SIAL's agent. Per image and iteration, one click per class, at the centre of
  the largest region of that class that the prediction misses (or one in each of its few
  largest regions).

"Centre" is the pixel deepest inside the region (the maximum of its distance transform). It
always lies inside the region, unlike the centroid of a ring-shaped error.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..io.clicks import Click
from ..io.outputs import CLASS_NODATA
from ..io.tiling import Patch
from ..predict.evaluation import LABEL_NODATA


def errors(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Pixels where a known truth and a valid prediction disagree."""
    return (truth != LABEL_NODATA) & (predicted != CLASS_NODATA) & (predicted != truth)


def region_centres(mask: np.ndarray, count: int = 1) -> list[tuple[int, int]]:
    """(row, col) deep inside each of the ``count`` largest connected regions of ``mask``
    (8-connectivity), largest first."""
    labelled, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return []
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    largest = np.argsort(sizes[1:], kind="stable")[::-1][:count] + 1
    boxes = ndimage.find_objects(labelled)
    centres = []
    for region in largest:
        box = boxes[region - 1]
        inside = labelled[box] == region
        depth = ndimage.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1]
        row, col = np.unravel_index(depth.argmax(), depth.shape)
        centres.append((int(row + box[0].start), int(col + box[1].start)))
    return centres


def region_centre(mask: np.ndarray) -> tuple[int, int] | None:
    """(row, col) deep inside the largest connected region of ``mask`` (8-connectivity)."""
    centres = region_centres(mask)
    return centres[0] if centres else None


def dial_click(predicted: np.ndarray, truth: np.ndarray, patch: Patch) -> Click | None:
    """DIAL's click in ``patch``: the largest error region's centre, with the true class."""
    window = np.s_[patch.row : patch.row + patch.height, patch.col : patch.col + patch.width]
    centre = region_centre(errors(predicted[window], truth[window]))
    if centre is None:
        return None
    row, col = centre[0] + patch.row, centre[1] + patch.col
    return Click(row, col, int(truth[row, col]))


def sial_clicks(
    predicted: np.ndarray | None, truth: np.ndarray, classes: Sequence[int], per_class: int = 1
) -> list[Click]:
    """SIAL's clicks: for each class, the centre of its largest missed region (or of its
    ``per_class`` largest ones). With no prediction (``None``) every labelled pixel counts as
    missed, so the clicks sit at the centres of each class's largest regions."""
    wrong = truth != LABEL_NODATA if predicted is None else errors(predicted, truth)
    clicks = []
    for class_id in classes:
        for row, col in region_centres(wrong & (truth == class_id), per_class):
            clicks.append(Click(row, col, class_id))
    return clicks
