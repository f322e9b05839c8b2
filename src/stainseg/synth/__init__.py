"""Synthetic scenario-A experiments (bright-field time-lapse + end-point stains) with true labels.

For tests, the demo and scale benchmarks: :func:`generate_experiment` writes the images, the true
cell/nucleus labels and tracks, and an experiment TOML.
"""

from stainseg.synth.experiment import PATTERN, generate_experiment

__all__ = ["PATTERN", "generate_experiment"]
