"""Throughput benchmarks of coin-lightning (``make bench`` = ``python -m experiments.benchmarks.run``).

Modules: :mod:`.machine` (machine facts, thread choice, matmul peak), :mod:`.timing` (interleaved
repeats, peak memory), :mod:`.flops` (the useful-FLOP formula), :mod:`.batches` (real GLUE batches,
padding efficiency), :mod:`.steps` (the project's and the reference-style training step),
:mod:`.evaluation` (prediction throughput, prefix cache), :mod:`.report` (markdown) and :mod:`.run`
(the command line). See ``docs/PERFORMANCE.md``.
"""
