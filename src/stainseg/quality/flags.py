"""Quality flags: say in words why an image (or a segmentation) is unlike the training data.

:func:`check_image` and :func:`check_objects` compare a new image or segmentation with the
:func:`stainseg.quality.measures.reference_statistics` of the training data and return :class:`Flag` s;
:func:`is_blank` says whether a stack holds any signal at all. Label QC (:mod:`stainseg.groundtruth.qc`)
uses the same codes (:data:`FLAG_MEANINGS`).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> noise = rng.poisson(150, (1, 256, 256)).astype(np.uint16)  # a camera frame with nothing in it
>>> is_blank(noise)
True
"""

from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from stainseg.quality.measures import BLANK_SNR, TEXTURE_MEASURES, image_statistics, object_statistics

__all__ = ["Flag", "FLAG_MEANINGS", "INFORMATIVE", "check_image", "check_objects", "is_blank"]

#: Flag code -> one-line meaning (the vocabulary shared by segmentation and label QC).
FLAG_MEANINGS: dict[str, str] = {
    "blank": "no signal above the camera noise (empty well, noise-only or constant frame)",
    "low_signal": "signal above the noise, but far weaker (relative to the noise) than in the training images",
    "saturated": "many pixels clipped at the maximum value (over-exposure): intensities there are lost",
    "out_of_focus": "edges far blurrier than in the training images (defocus), relative to the contrast",
    "unlike_training": "texture or intensity distribution unlike the training images (other stain, modality or cell type)",
    "dim": "contrast far below the training exposure (informative: the checks are exposure-invariant)",
    "bright": "contrast far above the training exposure (informative: the checks are exposure-invariant)",
    "too_many_objects": "far more objects per area than in the training labels (noise or debris segmented)",
    "too_few_objects": "far fewer objects per area than in the training labels (or none)",
    "object_size": "object areas unlike the training labels (other magnification, split or merged objects)",
}

#: Codes that describe the image but are not a reason to distrust the result.
INFORMATIVE: frozenset[str] = frozenset({"dim", "bright"})

#: A channel whose saturated fraction exceeds this (and 10x the training's) is flagged ``saturated``.
SATURATED_FRACTION = 0.002
#: ``out_of_focus`` when the sharpness is this factor below the lowest training value.
FOCUS_FACTOR = 1.6
#: ``dim`` / ``bright`` when the signal is this factor outside the training range.
EXPOSURE_FACTOR = 4.0
#: ``unlike_training`` when a texture measure is more than this many robust standard deviations from
#: the training median (spreads are floored, see :data:`TEXTURE_FLOOR`).
TEXTURE_Z = 6.0
#: Smallest robust spread of each texture measure, so one training image (MAD 0) still has a range:
#: ``asymmetry`` is compared linearly, the band shares as natural logarithms (0.1 = 10 %). With n
#: training images the floors are multiplied by ``1 + 4 / n`` (x5 for one image, x2 for four): a
#: spread measured on a few images is not trusted.
TEXTURE_FLOOR: dict[str, float] = {"asymmetry": 0.01, "band1": 0.1, "band2": 0.1, "band4": 0.1,
                                   "band8": 0.1, "band16": 0.1}
#: ``too_many_objects`` / ``too_few_objects`` / ``object_size`` when outside the training range by this factor.
OBJECT_FACTOR = 3.0
#: ``low_signal`` when the signal-to-noise is this factor below the lowest training value.
SNR_FACTOR = 10.0


class Flag(NamedTuple):
    """One quality finding.

    Attributes
    ----------
    code : str
        A key of :data:`FLAG_MEANINGS`.
    reason : str
        One line, starting with the code, with the measured number and the training range.

    Examples
    --------
    >>> Flag("saturated", "saturated: 12.3 % of pixels at the maximum (training: 0.1 %)").informative
    False
    """

    code: str
    reason: str

    @property
    def informative(self) -> bool:
        """True for codes that describe the image without casting doubt on the result (``dim``, ``bright``).

        Examples
        --------
        >>> Flag("dim", "dim: contrast 12x below the training exposure").informative
        True
        """
        return self.code in INFORMATIVE

    def __str__(self) -> str:
        return self.reason


def _num(summary: Mapping[str, Any], key: str) -> float:
    v = summary.get(key) if summary else None
    return float(v) if v is not None else math.nan


def _g(v: float) -> str:
    return f"{v:.3g}"


def _pct(v: float) -> str:
    return f"{100 * v:.3g} %"


def is_blank(stack: np.ndarray, reference: Mapping[str, Any] | None = None) -> bool:
    """True when every channel of the stack is blank: no local contrast above the camera noise.

    Catches noise-only frames (an empty well, a shutter that did not open), not only constant ones.
    ``reference`` is accepted for symmetry with :func:`check_image`; the rule is absolute
    (signal-to-noise below :data:`BLANK_SNR`), so a dim but real field is not blank.

    Examples
    --------
    >>> import numpy as np
    >>> is_blank(np.full((2, 64, 64), 7, np.uint16))
    True
    """
    del reference
    return all(not (s["snr"] >= BLANK_SNR) for s in image_statistics(stack))


def check_image(stack: np.ndarray, reference: Mapping[str, Any],
                stats: Sequence[Mapping[str, float]] | None = None) -> list[Flag]:
    """Quality flags of one raw ``(C, Y, X)`` stack against the training :func:`reference_statistics`.

    Rules (per channel; the reason names the channel when there are several):

    * ``blank``: signal-to-noise below :data:`BLANK_SNR` (the other checks are skipped for it);
    * ``low_signal``: signal-to-noise :data:`SNR_FACTOR` x below the training range;
    * ``saturated``: more than :data:`SATURATED_FRACTION` and 10x the training's highest fraction
      of the pixels at the maximum;
    * ``out_of_focus``: sharpness :data:`FOCUS_FACTOR` x below the training range;
    * ``unlike_training``: a texture measure more than :data:`TEXTURE_Z` robust standard deviations
      (floored at :data:`TEXTURE_FLOOR`) from the training median; not raised when the channel is
      already ``saturated`` or ``out_of_focus`` (clipping and blur change the texture too);
    * ``dim`` / ``bright`` (informative): signal :data:`EXPOSURE_FACTOR` x outside the training range.

    The training range is min..max (2nd..98th percentile with >= 50 images); with one training image
    it is that image's value, and the factors alone set the tolerance.

    Parameters
    ----------
    stack : (C, Y, X) or (Y, X) ndarray
    reference : dict
        From :func:`reference_statistics` (or read back from JSON).
    stats : list of dict, optional
        :func:`image_statistics` of the stack when already computed.

    Returns
    -------
    list of Flag
        Empty when nothing is unusual.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> yy, xx = np.mgrid[:128, :128]
    >>> img = 100 + 800.0 * (((yy - 64) ** 2 + (xx - 64) ** 2) < 12 ** 2) + rng.normal(0, 4, (128, 128))
    >>> from stainseg.quality.measures import reference_statistics
    >>> ref = reference_statistics([img[None]])
    >>> check_image(img[None], ref)
    []
    >>> [f.code for f in check_image(np.clip(img * 20, 0, 4095)[None], ref)]
    ['saturated']
    """
    stats = list(stats) if stats is not None else image_statistics(stack)
    channels = reference.get("channels") or []
    flags: list[Flag] = []
    for c, s in enumerate(stats):
        ref = channels[c] if c < len(channels) else {}
        where = f" in channel {c}" if len(stats) > 1 else ""
        n_before = len(flags)
        snr_low = _num(ref.get("snr", {}), "low")
        # a channel that already had little contrast in training (e.g. the in-focus plane of a bright-field
        # stack) is blank only when it is far below what training showed, not merely below the absolute rule
        blank_limit = min(BLANK_SNR, 0.5 * snr_low) if np.isfinite(snr_low) else BLANK_SNR
        if not (s["snr"] >= blank_limit):
            flags.append(Flag("blank", f"blank: largest local contrast{where} is {_g(s['snr'])} x the noise "
                                       f"(signal {_g(s['signal'])}, noise {_g(s['noise'])} counts; a real field "
                                       f"needs >= {_g(BLANK_SNR)}; training: {_g(_num(ref.get('snr', {}), 'low'))}"
                                       f"..{_g(_num(ref.get('snr', {}), 'high'))})"))
            continue
        if np.isfinite(snr_low) and s["snr"] < snr_low / SNR_FACTOR:
            flags.append(Flag("low_signal", f"low_signal: signal-to-noise{where} {_g(s['snr'])} is more than "
                                            f"{_g(SNR_FACTOR)}x below the training range {_g(snr_low)}.."
                                            f"{_g(_num(ref['snr'], 'high'))}"))
        sat_high = _num(ref.get("saturated", {}), "high")
        sat_limit = max(SATURATED_FRACTION, 10 * sat_high if np.isfinite(sat_high) else 0.0)
        if s["saturated"] > sat_limit:
            train = f"training: up to {_pct(sat_high)}" if np.isfinite(sat_high) else "no training figure"
            flags.append(Flag("saturated", f"saturated: {_pct(s['saturated'])} of pixels{where} at the maximum "
                                           f"{s['maximum']:.6g} ({train})"))
        sharp_low = _num(ref.get("sharpness", {}), "low")
        if np.isfinite(sharp_low) and np.isfinite(s["sharpness"]) and s["sharpness"] < sharp_low / FOCUS_FACTOR:
            flags.append(Flag("out_of_focus", f"out_of_focus: edge sharpness{where} {_g(s['sharpness'])}/px is more "
                                              f"than {_g(FOCUS_FACTOR)}x below the training range {_g(sharp_low)}.."
                                              f"{_g(_num(ref['sharpness'], 'high'))}/px (an edge blurred over about "
                                              f"{_g(1 / (math.sqrt(math.e) * max(s['sharpness'], 1e-9)))} px)"))
        worst: list[tuple[float, str]] = []
        for key in TEXTURE_MEASURES:
            summ = ref.get(key, {})
            median, value = _num(summ, "median"), float(s[key])
            spread = _num(summ, "spread")
            if key != "asymmetry":  # shares: compare ratios (log), spread of the log from the relative MAD
                if not (median > 0 and value > 0):
                    continue
                distance, spread = math.log(value / median), spread / median
            else:
                distance = value - median
            if not (np.isfinite(distance) and np.isfinite(median)):
                continue
            floor = TEXTURE_FLOOR[key] * (1.0 + 4.0 / max(_num(summ, "n"), 1.0))
            z = abs(distance) / max(spread if np.isfinite(spread) else 0.0, floor)
            if z > TEXTURE_Z:
                worst.append((z, f"{key} {_g(value)} (training median {_g(median)}, range "
                                 f"{_g(_num(summ, 'low'))}..{_g(_num(summ, 'high'))}; {z:.0f} robust SD away)"))
        explained = any(f.code in ("saturated", "out_of_focus") for f in flags[n_before:])
        if worst and not explained:
            worst.sort(reverse=True)
            flags.append(Flag("unlike_training", f"unlike_training{where}: " + "; ".join(t for _, t in worst[:3])))
        sig = ref.get("signal", {})
        lo, hi = _num(sig, "low"), _num(sig, "high")
        if np.isfinite(lo) and s["signal"] < lo / EXPOSURE_FACTOR:
            flags.append(Flag("dim", f"dim: contrast{where} {_g(s['signal'])} counts is {_g(lo / s['signal'])}x below "
                                     f"the training range {_g(lo)}..{_g(hi)}"))
        elif np.isfinite(hi) and s["signal"] > hi * EXPOSURE_FACTOR:
            flags.append(Flag("bright", f"bright: contrast{where} {_g(s['signal'])} counts is {_g(s['signal'] / hi)}x above "
                                        f"the training range {_g(lo)}..{_g(hi)}"))
    return flags


def check_objects(labels: np.ndarray, reference: Mapping[str, Any]) -> list[Flag]:
    """Quality flags of a segmentation result against the training labels' statistics.

    ``too_many_objects`` / ``too_few_objects`` when the density (objects per megapixel, so image sizes
    may differ) is :data:`OBJECT_FACTOR` x outside the training range (none at all is too few when
    every training image had objects); ``object_size`` when the median area is that factor outside
    the range of the training images' median areas. No flags when the reference has no ``objects``.

    Examples
    --------
    >>> import numpy as np
    >>> lab = np.zeros((200, 200), np.int32)
    >>> for i in range(4):
    ...     lab[i * 50:i * 50 + 20, 10:30] = i + 1
    >>> from stainseg.quality.measures import reference_statistics
    >>> ref = reference_statistics([lab[None].astype(float)], [lab])
    >>> [f.code for f in check_objects(np.zeros_like(lab), ref)]
    ['too_few_objects']
    """
    objs = reference.get("objects")
    if not objs:
        return []
    s = object_statistics(labels)
    flags: list[Flag] = []
    dens = objs.get("density", {})
    lo, hi = _num(dens, "low"), _num(dens, "high")
    rng = f"training {_g(lo)}..{_g(hi)}"
    if np.isfinite(hi) and s["density"] > max(hi, 1e-9) * OBJECT_FACTOR:
        flags.append(Flag("too_many_objects", f"too_many_objects: {s['count']} objects, {_g(s['density'])} per megapixel "
                                              f"({rng})"))
    elif np.isfinite(lo) and lo > 0 and (s["count"] == 0 or s["density"] < lo / OBJECT_FACTOR):
        flags.append(Flag("too_few_objects", f"too_few_objects: {s['count']} objects, {_g(s['density'])} per megapixel "
                                             f"({rng})"))
    med = objs.get("median_area", {})
    lo, hi = _num(med, "low"), _num(med, "high")
    if s["count"] and np.isfinite(lo) and np.isfinite(hi) and not (lo / OBJECT_FACTOR <= s["median_area"] <= hi * OBJECT_FACTOR):
        flags.append(Flag("object_size", f"object_size: median object area {_g(s['median_area'])} px (training "
                                         f"{_g(lo)}..{_g(hi)} px)"))
    return flags
