"""Fixtures of the evaluation tests."""
from __future__ import annotations

import pytest

from tests.eval.eval_helpers import capture_figures


@pytest.fixture()
def figures(monkeypatch):
    """The figures an evaluation run saves, ``{path: Figure}`` (``tests.eval.test_evaluate.check_outputs`` reads them)."""
    from coin_lightning.eval import run as eval_run

    return capture_figures(monkeypatch, eval_run)
