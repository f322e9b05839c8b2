"""What every run records so a result can be reproduced: versions, machine, config, seed."""

from __future__ import annotations

import platform
import sys
import time
from typing import Any

from stainseg import __version__


def versions() -> dict[str, str]:
    """Versions of stainseg, Python and the libraries that shape results.

    Read from the installed package metadata, so that recording them imports nothing (importing
    torch alone takes 2-3 s, and segmenting with ONNX Runtime does not need it).

    Examples
    --------
    >>> v = versions()
    >>> {"stainseg", "python", "numpy"} <= set(v)
    True
    """
    from importlib.metadata import PackageNotFoundError, version

    out = {"stainseg": __version__, "python": sys.version.split()[0]}
    for name, dist in (("numpy", "numpy"), ("scipy", "scipy"), ("skimage", "scikit-image"), ("torch", "torch"),
                       ("onnxruntime", "onnxruntime"), ("tifffile", "tifffile"), ("zarr", "zarr"), ("dask", "dask")):
        try:
            out[name] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def provenance(cfg: Any | None = None) -> dict[str, Any]:
    """A dict for ``run.json``: time, machine, versions and (when given) the full config.

    Examples
    --------
    >>> from stainseg.config import ExperimentConfig
    >>> record = provenance(ExperimentConfig())
    >>> sorted(record)
    ['config', 'finished', 'machine', 'seed', 'versions']
    >>> record["seed"]
    0
    """
    from stainseg.config import config_to_dict

    record: dict[str, Any] = {
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"platform": platform.platform(), "processor": platform.machine()},
        "versions": versions(),
    }
    if cfg is not None:
        record["config"] = config_to_dict(cfg)
        record["seed"] = cfg.train.seed
    return record
