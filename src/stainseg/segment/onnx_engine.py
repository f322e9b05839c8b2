"""Run a trained network with ONNX Runtime on the CPU, without importing torch.

:func:`export_onnx` writes the network once (batch norm folded, float32, dynamic batch, height
and width) and checks the file against torch. :class:`OnnxPredictor` is a drop-in for
:class:`stainseg.segment.predictor.TorchPredictor`: ``(N, C, t, t) float32 → (N, K, t, t)``
softmax probabilities, for :func:`stainseg.segment.tiling.predict_tiled`.

Choices, each measured in ``benchmarks/engines.py`` (2-core AMD EPYC):

- the graph ends with the logits and the softmax is taken in numpy: ONNX Runtime's Softmax
  over axis 1 of an NCHW tensor transposes the whole map and cost more than the numpy softmax
  (about 1.5 ms for 8 tiles of 240²);
- batch, height and width are dynamic: a graph with the tile shape fixed was not faster, and a
  dynamic one also runs a whole image in one pass;
- the graph needs sides that are multiples of ``2 ** depth`` (it is traced without the
  network's own mirror padding); :class:`OnnxPredictor` pads in numpy exactly as
  ``StainNet.forward`` does and crops the result.

This module imports neither torch nor onnx at module level: segmenting with an exported model
needs only numpy and onnxruntime (``import onnxruntime`` takes about 0.2 s, ``import torch`` 2-3 s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from stainseg.errors import StainsegError

__all__ = ["export_onnx", "OnnxPredictor", "softmax_channels", "ONNX_OPSET"]

ONNX_OPSET = 17
_INPUT, _OUTPUT = "image", "logits"
_META_MULTIPLE = "stainseg.size_multiple"
_META_CHANNELS = "stainseg.in_channels"
_META_CLASSES = "stainseg.n_classes"
_CHECK_TOLERANCE = 1e-4


def softmax_channels(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 1 of ``(N, K, Y, X)`` float32 logits, in place; returns the same array.

    Examples
    --------
    >>> p = softmax_channels(np.zeros((1, 2, 3, 3), np.float32))
    >>> float(p.min()), float(p.max())
    (0.5, 0.5)
    """
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def _fold(model: Any) -> Any:
    try:
        from stainseg.network import fold_batchnorm
    except ImportError:  # older layout
        from stainseg.segment.predictor import fold_batchnorm
    return fold_batchnorm(model)


def export_onnx(model: Any, path: str | Path, in_channels: int, check_size: int = 64) -> Path:
    """Write ``model`` (a torch ``nn.Module`` returning logits) as an ONNX file and check it.

    Parameters
    ----------
    model : torch.nn.Module
        The network (e.g. ``StainNet``); it is not changed (batch norm is folded in a copy).
    path : str or Path
        Output file (``.onnx``), written atomically.
    in_channels : int
        Input channels ``C`` (fixed in the graph; batch, height and width are dynamic).
    check_size : int
        Side of the random check input; ONNX Runtime must agree with torch float32 to 1e-4.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    StainsegError
        If onnx/onnxruntime are missing, or the exported graph disagrees with torch.

    Examples
    --------
    >>> from stainseg.config import ModelConfig  # doctest: +SKIP
    >>> from stainseg.network import StainNet  # doctest: +SKIP
    >>> export_onnx(StainNet(ModelConfig(in_channels=3)), "model.onnx", 3)  # doctest: +SKIP
    PosixPath('model.onnx')
    """
    import torch

    from stainseg.io.atomic import atomic_path

    path = Path(path)
    try:
        import onnx
    except ImportError:
        raise StainsegError("exporting to ONNX needs the 'onnx' package; pip install onnx onnxruntime", path) from None
    folded = _fold(model).float().cpu().eval()
    multiple = 2 ** int(getattr(folded, "depth", 0))
    side = max(multiple, -(-int(check_size) // multiple) * multiple)
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2, int(in_channels), side, side, generator=generator)
    dynamic = {0: "batch", 2: "height", 3: "width"}
    with atomic_path(path) as tmp:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python branches
            torch.onnx.export(
                folded,
                (example,),
                str(tmp),
                opset_version=ONNX_OPSET,
                dynamo=False,
                input_names=[_INPUT],
                output_names=[_OUTPUT],
                dynamic_axes={_INPUT: dynamic, _OUTPUT: dynamic},
            )
        graph = onnx.load(str(tmp))
        with torch.inference_mode():
            n_classes = int(folded(example[:1]).shape[1])
        for key, value in ((_META_MULTIPLE, multiple), (_META_CHANNELS, int(in_channels)), (_META_CLASSES, n_classes)):
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, str(value)
        graph.doc_string = "stainseg network (batch norm folded); outputs logits, softmax over axis 1 gives probabilities"
        onnx.save(graph, str(tmp))
        # Check on a non-square input with a side that is not a multiple (exercises padding and cropping).
        check = torch.randn(1, int(in_channels), side + multiple + 3, side + 1, generator=generator)
        with torch.inference_mode():
            expected = torch.softmax(model.float().cpu().eval()(check), dim=1).numpy()
        got = OnnxPredictor(tmp, threads=1)(check.numpy())
        diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
        if not diff <= _CHECK_TOLERANCE:
            raise StainsegError(f"exported ONNX graph disagrees with torch (max |diff| {diff:.2g} > {_CHECK_TOLERANCE:g}); report this as a bug and segment with the torch engine", path)
    return path


class OnnxPredictor:
    """Callable ``(N, C, t, t) float32 → (N, K, t, t)`` softmax probabilities from an ONNX file.

    Same interface as :class:`stainseg.segment.predictor.TorchPredictor`; float32 on the CPU
    (ONNX Runtime's CPU execution provider, all graph optimisations).

    Parameters
    ----------
    path : str or Path
        A file written by :func:`export_onnx`.
    threads : int, optional
        Intra-op threads (default: ONNX Runtime's choice, one per physical core).

    Examples
    --------
    >>> f = OnnxPredictor("model.onnx", threads=2)  # doctest: +SKIP
    >>> f(np.zeros((8, 3, 240, 240), np.float32)).shape  # doctest: +SKIP
    (8, 3, 240, 240)
    """

    def __init__(self, path: str | Path, threads: Optional[int] = None) -> None:
        self.path = Path(path)
        try:
            import onnxruntime as ort
        except ImportError:
            raise StainsegError("the ONNX engine needs the 'onnxruntime' package; pip install onnxruntime, or use the torch engine", self.path) from None
        if not self.path.is_file():
            raise StainsegError("ONNX model file not found; export it again (stainseg.segment.onnx_engine.export_onnx)", self.path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only; they are re-raised below as one line
        if threads is not None:
            options.intra_op_num_threads = max(1, int(threads))
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
            reason = " ".join(str(exc).split())[:200]
            raise StainsegError(f"not a readable ONNX model ({reason}); export it again from the trained model", self.path) from None
        self.threads = threads
        meta = self.session.get_modelmeta().custom_metadata_map
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise StainsegError("ONNX model does not take one (N, C, Y, X) image input; export it with export_onnx", self.path)
        self.input_name = inputs[0].name
        channels = inputs[0].shape[1]
        self.in_channels = int(meta.get(_META_CHANNELS, channels if isinstance(channels, int) else 0)) or None
        self.multiple = int(meta.get(_META_MULTIPLE, 1))
        self.n_classes = int(meta[_META_CLASSES]) if _META_CLASSES in meta else None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.ndim != 4 or (self.in_channels is not None and x.shape[1] != self.in_channels):
            raise StainsegError(f"input has shape {x.shape}; the model expects (N, {self.in_channels}, Y, X)", self.path)
        height, width = x.shape[-2:]
        pad_y, pad_x = (-height) % self.multiple, (-width) % self.multiple
        if pad_y or pad_x:  # as StainNet.forward: mirror, or repeat the edge when the image is too small
            mode = "reflect" if pad_y < height and pad_x < width else "edge"
            x = np.pad(x, ((0, 0), (0, 0), (0, pad_y), (0, pad_x)), mode=mode)
        logits = self.session.run(None, {self.input_name: x})[0]
        if pad_y or pad_x:
            logits = np.ascontiguousarray(logits[..., :height, :width])
        return softmax_channels(logits)

    def describe(self) -> str:
        """One line: engine, device, dtype, threads (for run.json / logs)."""
        threads = "default" if self.threads is None else str(self.threads)
        return f"onnxruntime {_ort_version()} cpu float32 threads={threads}"


def _ort_version() -> str:
    import onnxruntime as ort

    return str(ort.__version__)
