"""Evaluation: tasks and rows, instruction sets, prediction, metrics, reports, plots, comparisons."""
