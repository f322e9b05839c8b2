"""Per-image quality checks: say in words why an image (or a segmentation) is unlike the training data.

Real plates hold empty wells, out-of-focus fields, bubbles and debris, saturated spots, other exposures
and other days. A network applied to them still returns labels; these checks say when not to trust them.

:func:`reference_statistics` summarises these over the training images (and, with labels, the object
counts and areas); :func:`check_image` and :func:`check_objects` compare a new image or segmentation
with it and return :class:`Flag` s. Label QC (:mod:`stainseg.groundtruth.qc`) uses the same codes.

Two modules of one job each: :mod:`stainseg.quality.measures` (the statistics of an image, a label
image and the training set) and :mod:`stainseg.quality.flags` (the comparison, in words). Their
public names are importable from ``stainseg.quality``.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> noise = rng.poisson(150, (1, 256, 256)).astype(np.uint16)  # a camera frame with nothing in it
>>> is_blank(noise)
True
"""

from stainseg.quality.flags import (EXPOSURE_FACTOR, FLAG_MEANINGS, FOCUS_FACTOR, INFORMATIVE, OBJECT_FACTOR,
                                    SATURATED_FRACTION, SNR_FACTOR, TEXTURE_FLOOR, TEXTURE_Z, Flag, check_image,
                                    check_objects, is_blank)
from stainseg.quality.measures import (BLANK_SNR, TEXTURE_MEASURES, image_statistics, object_statistics,
                                       plane_statistics, reference_statistics)

__all__ = ["Flag", "FLAG_MEANINGS", "INFORMATIVE", "check_image", "check_objects", "is_blank", "plane_statistics",
           "image_statistics", "object_statistics", "reference_statistics", "BLANK_SNR", "SATURATED_FRACTION",
           "FOCUS_FACTOR", "EXPOSURE_FACTOR", "TEXTURE_Z", "TEXTURE_FLOOR", "OBJECT_FACTOR", "SNR_FACTOR",
           "TEXTURE_MEASURES"]
