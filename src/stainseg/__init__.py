"""stainseg: train a cell-segmentation network from end-point stains, no manual annotation."""

__version__ = "0.1.0"

from stainseg.errors import StainsegError

__all__ = ["StainsegError", "__version__"]
