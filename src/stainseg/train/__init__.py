"""Training: augmentation, class weights, the network and the training loop (METHOD.md sections 2-4).

Import the submodules directly (``stainseg.network``, ``stainseg.train.loop`` ...); this package
imports nothing on its own so that segmentation can load the network without the training loop.
"""


from stainseg._callable import callable_package  # noqa: E402

callable_package(__name__, "train")  # stainseg.train(...) is the front-door function too
