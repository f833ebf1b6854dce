"""``results/instruction_regime/summary.json`` (placeholder, replaced below)."""
from __future__ import annotations


def write_summary(cfg, compared, results):
    raise NotImplementedError
