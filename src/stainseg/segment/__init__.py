"""Segmentation of new images (METHOD.md section 5): tiled inference, uncertainty, instance labels.

- :func:`stainseg.segment.tiling.predict_tiled` — model-agnostic two-pass tiled inference with
  Gaussian blending, uncertainty from the two passes, streaming over zarr for huge images.
- :class:`stainseg.segment.predictor.TorchPredictor` — a torch model as a tile predictor (BN
  folding, channels_last, bf16 where native, optional torch.compile).
- :func:`stainseg.segment.instances.probability_to_labels` — seeds, watershed, size filter and
  non-overwriting square dilation.
- :mod:`stainseg.segment.seeds` — watershed seeds from the smoothed distance map, and the merge of
  touching basins that no real neck divides.

Submodules are imported lazily so that ``import stainseg.segment`` does not import torch.
"""

from __future__ import annotations

__all__ = ["predict_tiled", "probability_to_labels", "dilate_labels", "TorchPredictor", "predict_whole_naive"]


def __getattr__(name: str):
    if name == "predict_tiled":
        from stainseg.segment.tiling import predict_tiled

        return predict_tiled
    if name in ("probability_to_labels", "dilate_labels"):
        from stainseg.segment import instances

        return getattr(instances, name)
    if name in ("TorchPredictor", "predict_whole_naive"):
        from stainseg.segment import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'stainseg.segment' has no attribute {name!r}")


from stainseg._callable import callable_package  # noqa: E402

callable_package(__name__, "segment")  # stainseg.segment(...) is the front-door function too
