"""Throughput benchmarks of coin-lightning (``make bench`` = ``python -m experiments.benchmarks.run``).

Modules: :mod:`.machine` (machine facts, thread choice, matmul peak), :mod:`.timing` (interleaved
repeats, peak memory), :mod:`.flops` (the useful-FLOP formula), :mod:`.batches` (real GLUE batches,
padding efficiency), :mod:`.steps` (the project's and the reference-style training step),
:mod:`.evaluation` (prediction throughput, prefix cache), :mod:`.report` (markdown) and :mod:`.run`
(the command line). ``make bench-commits`` (:mod:`.commits`, with :mod:`.commit_probe` measuring inside
each source tree and :mod:`.commit_report`) compares two commits side by side. See ``docs/PERFORMANCE.md``.
"""
