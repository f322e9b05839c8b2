"""stainseg: train a cell-segmentation network from end-point stains, no manual annotation.

>>> import stainseg
>>> sorted(stainseg.__all__)
['Model', 'StainsegError', '__version__', 'automatic_labels', 'evaluate', 'segment', 'train']
"""

__version__ = "0.2.0"

from stainseg.api import automatic_labels, evaluate, segment, train
from stainseg.errors import StainsegError
from stainseg.model import Model

__all__ = ["Model", "train", "segment", "automatic_labels", "evaluate", "StainsegError", "__version__"]
