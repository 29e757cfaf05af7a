"""``mamext experiment``: reproduce the MAM pruning claim on Fashion-MNIST.

Trains an MLP 784-512-256-10 twice (all MAC; MAM hidden layers), sweeps
one-shot pruning of the hidden layers from 100 % down to 0.01 % remaining with
several criteria (or lottery-ticket rounds), and writes a summary table,
``results.csv``, ``results.json`` and ``accuracy_vs_remaining.png``.
See the README.
"""

from .cli import build_parser, main, resolve_options, run
from .data import (DEFAULT_DATA_DIR, DEFAULT_DATA_DIRS, DatasetError, load_dataset, load_digits, load_idx_dataset,
                   read_idx)
from .models import build_mlp

__all__ = ["main", "run", "build_parser", "resolve_options", "read_idx", "load_idx_dataset", "load_digits",
           "load_dataset", "DatasetError", "DEFAULT_DATA_DIR", "DEFAULT_DATA_DIRS", "build_mlp"]
