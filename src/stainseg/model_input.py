"""The raw input of a :class:`stainseg.Model`: planes arranged as the (C, Y, X) stack of its input channels.

:func:`arrange_channels` accepts the shapes a user has at hand (a plane, a stack in either channel
order, a list of planes) and turns anything else into a one-line :class:`StainsegError`;
:func:`is_constant` tells an empty or flat stack, which is not run through the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stainseg.errors import StainsegError

__all__ = ["arrange_channels", "is_constant"]


def arrange_channels(image: Any, n_channels: int, where: str | Path | None = None) -> np.ndarray:
    """Arrange an array (or a list of 2-D planes) as the (C, Y, X) float stack of a model with ``n_channels`` inputs.

    Accepts (Y, X) for one channel, (C, Y, X), (Y, X, C) with C <= 4, singleton axes, or a
    sequence of 2-D planes of one size in the order of the model's input channels. Anything else
    is a one-line :class:`StainsegError` naming ``where``.

    Examples
    --------
    >>> arrange_channels(np.zeros((5, 6, 2)), 2).shape
    (2, 5, 6)
    """
    from stainseg.io.images import as_float

    if isinstance(image, (list, tuple)):
        planes = [np.squeeze(np.asarray(p)) for p in image]
        if not planes:
            raise StainsegError("no image given; give the model's input plane(s)", where)
        if len(planes) > 1:
            if len({p.shape for p in planes}) > 1 or any(p.ndim != 2 for p in planes):
                raise StainsegError(f"the input planes must be 2-D and of one size, got shapes {[p.shape for p in planes]}", where)
            image = np.stack(planes)
        else:
            image = planes[0]
    image = np.asarray(image)
    shape = image.shape
    image = np.squeeze(image)
    if image.ndim < 2:
        raise StainsegError(f"image is only {' x '.join(map(str, shape)) or 'a scalar'} pixels; too small to segment", where)
    if image.ndim == 3 and image.shape[-1] in (3, 4) and n_channels not in (image.shape[0], image.shape[-1]):
        raise StainsegError(f"is a colour (RGB) image but the model expects {n_channels} grayscale channel(s); "
                            "give the grayscale microscope image (see MODEL/model.json)", where)
    if image.ndim == 2:
        image = image[None]
    if image.ndim == 3 and image.shape[0] != n_channels and image.shape[-1] == n_channels and n_channels <= 4:
        image = np.moveaxis(image, -1, 0)
    if image.ndim != 3 or image.shape[0] != n_channels:
        got = image.shape[0] if image.ndim == 3 else f"shape {image.shape}"
        raise StainsegError(f"image has {got} channel(s)/plane(s) but the model expects {n_channels}; give a stack with "
                            "the model's input channels in order (see MODEL/model.json)", where)
    if min(image.shape[1:]) < 2:
        raise StainsegError(f"image is only {image.shape[1]} x {image.shape[2]} pixels; too small to segment", where)
    return as_float(image, where)


def is_constant(stack: np.ndarray) -> bool:
    """True when every plane of a (C, Y, X) stack is constant (an empty or flat image).

    Examples
    --------
    >>> is_constant(np.zeros((2, 8, 8))), is_constant(np.eye(8)[None])
    (True, False)
    """
    return all(float(np.min(plane)) == float(np.max(plane)) for plane in stack)
