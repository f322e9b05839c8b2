"""The weight files of a bioimage.io package beside the PyTorch state dict: TorchScript and ONNX, each checked.

:func:`torchscript_weights` traces the network wrapper and checks the trace at a second size;
:func:`onnx_weights` writes opset-17 ONNX weights and keeps them only when ONNX Runtime reproduces
the package's test output within :data:`TOLERANCE`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from stainseg.errors import StainsegError
from stainseg.export.bioimageio_net import BioimageioStainNet, OnnxStainNet

__all__ = ["TOLERANCE", "onnx_weights", "torchscript_weights"]

TOLERANCE = {"relative": 1e-3, "absolute": 2e-3}
"""How closely the weights must reproduce the test output (written into the rdf; checked at export)."""


def onnx_weights(wrapped: BioimageioStainNet, path: Path, in_channels: int, multiple: int, test_input: np.ndarray,
                 test_output: np.ndarray) -> Optional[str]:
    """Write the package's ONNX weights; returns None, or why they were left out (then the package has torch weights only).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np, torch
    >>> from stainseg.export.bioimageio_net import wrap_network
    >>> from stainseg.model import Model
    >>> wrapped = wrap_network(Model.new(["BF"]))
    >>> x = np.random.default_rng(0).random((1, 1, 32, 32), dtype=np.float32)
    >>> with torch.inference_mode():
    ...     y = wrapped(torch.from_numpy(x)).numpy()
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     onnx_weights(wrapped, Path(tmp) / "weights.onnx", 1, 8, x, y)   # None: written, and it reproduces y
    """
    import warnings

    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    onnx_net = OnnxStainNet(**wrapped.init_kwargs)
    onnx_net.net.load_state_dict(wrapped.net.state_dict())
    onnx_net.eval()
    dynamic = {0: "batch", 2: "y", 3: "x"}
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(onnx_net, (torch.rand(1, in_channels, 4 * multiple, 4 * multiple),), str(path), opset_version=17,
                              dynamo=False, input_names=["raw"], output_names=["probabilities"],
                              dynamic_axes={"raw": dynamic, "probabilities": dynamic})
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {"raw": test_input.astype(np.float32)})[0]
    except Exception as exc:  # an exporter or runtime that cannot take the graph: leave the format out, say why
        return f"ONNX export failed ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"
    error = float(np.abs(got - test_output).max())
    if not error <= TOLERANCE["absolute"]:
        return f"ONNX weights differ from stainseg's output by {error:.2g}"
    return None


def torchscript_weights(wrapped: BioimageioStainNet, in_channels: int, multiple: int) -> torch.jit.ScriptModule:
    """Trace the wrapper (StainNet's shape checks are not scriptable) and check it at another size.

    Inputs are multiples of ``multiple`` (the rdf says so), where the network pads nothing, so
    the trace holds for every allowed size; the check at a second size and batch makes sure.

    Examples
    --------
    >>> import torch
    >>> from stainseg.export.bioimageio_net import wrap_network
    >>> from stainseg.model import Model
    >>> traced = torchscript_weights(wrap_network(Model.new(["BF"])), in_channels=1, multiple=8)
    >>> tuple(traced(torch.rand(1, 1, 40, 48)).shape)
    (1, 2, 40, 48)
    """
    import warnings

    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapped, torch.rand(1, in_channels, 4 * multiple, 4 * multiple), check_trace=False)
        probe = torch.rand(2, in_channels, 6 * multiple, 9 * multiple, generator=torch.Generator().manual_seed(0))
        error = float((traced(probe) - wrapped(probe)).abs().max())
    if not error < 1e-4:
        raise StainsegError(f"the TorchScript trace differs from the network by {error:.2g} with torch {torch.__version__}; "
                            "export with another torch version")
    return traced
