"""Training: augmentation, class weights, the network and the training loop (METHOD.md sections 2-4).

Import the submodules directly (``stainseg.network``, ``stainseg.train.loop`` ...); this package
imports nothing on its own so that segmentation can load the network without the training loop.
"""
