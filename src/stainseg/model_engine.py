"""What runs a :class:`stainseg.Model`'s network: the engine chosen for its settings and folder, and its tile predictor.

:func:`model_engine` resolves the engine (:func:`stainseg.segment.engine.choose_engine`: torch, or
ONNX Runtime on the folder's ``model.onnx``) and :func:`model_predictor` builds the predictor of
that engine; both are kept on the model and built again only when what they depend on changes
(the engine setting, the device, the weights, the ONNX file). :meth:`stainseg.Model.engine` and
:meth:`stainseg.Model.predictor` delegate here.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

__all__ = ["model_engine", "model_predictor", "counting_predictor"]


def model_engine(model: Any) -> Any:
    """The engine that runs ``model``'s network now and why (:class:`stainseg.segment.engine.EngineChoice`), kept on the model.

    Examples
    --------
    >>> from stainseg.model import Model
    >>> choice = model_engine(Model.new(["DNA"]))   # in memory, no model.onnx yet
    >>> choice.engine
    'torch'
    """
    from stainseg.segment.engine import choose_engine

    s = model.segment_settings
    key = (s.engine, s.device, model.onnx_file)
    if model.engine_choice is None or getattr(model, "_engine_key", None) != key:
        model.engine_choice = choose_engine(s.engine, s.device, model.onnx_file)
        model._engine_key = key
    return model.engine_choice


def model_predictor(model: Any, progress: Optional[Callable[[int], None]] = None) -> Callable[[np.ndarray], np.ndarray]:
    """The tile predictor ``(N, C, t, t) -> (N, K, t, t)`` of ``model``'s engine, built once and kept on the model.

    ONNX Runtime (``model.onnx``, float32, CPU) or torch on the model's device. With ``progress``,
    a wrapper that reports the number of tiles done after every batch (:func:`counting_predictor`).

    Examples
    --------
    >>> from stainseg.model import Model
    >>> model = Model.new(["DNA"])
    >>> model_predictor(model)(np.zeros((1, 1, 32, 32), np.float32)).shape
    (1, 2, 32, 32)
    >>> model_predictor(model) is model_predictor(model)
    True
    """
    engine = model_engine(model).engine
    s = model.segment_settings
    key = (engine, id(model._network), s.device, s.bfloat16, model.onnx_file)
    if model._predictor is None or model._predictor_key != key:
        if engine == "onnx":
            from stainseg.segment.onnx_engine import OnnxPredictor

            model._predictor = OnnxPredictor(model.onnx_file)
        else:
            from stainseg.segment.predictor import TorchPredictor

            model._predictor = TorchPredictor(model.network, device=s.device, bfloat16=s.bfloat16)
        model._predictor_key = key
    if progress is None:
        return model._predictor
    return counting_predictor(model._predictor, progress)


def counting_predictor(predictor: Callable[[np.ndarray], np.ndarray], progress: Callable[[int], None]) -> Callable[[np.ndarray], np.ndarray]:
    """``predictor``, calling ``progress(tiles done so far)`` after every batch.

    Examples
    --------
    >>> seen = []
    >>> counted = counting_predictor(lambda x: x, seen.append)
    >>> _ = counted(np.zeros((3, 1, 4, 4))); _ = counted(np.zeros((2, 1, 4, 4)))
    >>> seen
    [3, 5]
    """
    done = [0]

    def counting(batch: np.ndarray) -> np.ndarray:
        out = predictor(batch)
        done[0] += int(batch.shape[0])
        progress(done[0])
        return out
    return counting
