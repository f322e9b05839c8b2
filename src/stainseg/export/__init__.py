"""Meet users where they work: thin layers that hand a stainseg model to other tools.

- :mod:`stainseg.export.apply` — run a model directory on in-memory planes (the one entry point
  that the napari widgets and the CellProfiler module call);
- :mod:`stainseg.export.bioimageio` — write a BioImage Model Zoo package (``stainseg export``), from
  its parts: ``bioimageio_net`` (the network wrapper), ``bioimageio_weights`` (TorchScript, ONNX),
  ``bioimageio_sample`` (test image, cover) and ``bioimageio_readme`` (README, environment).
"""

from stainseg.export.apply import segment_planes

__all__ = ["segment_planes", "export_bioimageio"]


def export_bioimageio(*args, **kwargs):  # lazy: bioimageio.spec is an optional dependency
    """See :func:`stainseg.export.bioimageio.export_bioimageio`."""
    from stainseg.export.bioimageio import export_bioimageio as _export

    return _export(*args, **kwargs)
