"""Experiments around coin-lightning that are not part of the installed package: benchmarks, studies."""
