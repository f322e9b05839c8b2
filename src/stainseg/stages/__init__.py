"""File stages (floor 4): folders, index files, resumable runs and Dask over the array functions below.

``groundtruth``, ``train``, ``segment`` and ``evaluate`` each run one step of the method over every
image set of an experiment; ``pipeline`` chains them for ``stainseg run`` and the demo; ``parallel``
maps one task per image set over local processes or a Dask cluster.
"""
