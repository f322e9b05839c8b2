"""napari plugin (npe2 manifest ``napari.yaml``): a reader for stainseg label outputs, a widget that
segments image layers with a model directory, and a widget that makes automatic labels from a stain.

Install with ``pip install "stainseg[napari]"``. :mod:`stainseg.napari.core` holds the functions
the widgets call (plain numpy, no Qt); :mod:`stainseg.napari.widgets` needs napari.
"""
