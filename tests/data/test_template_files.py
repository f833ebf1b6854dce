"""Template files: errors of the own YAML and FLAN JSON loaders, and the ``data.templates`` dispatch."""
from __future__ import annotations

import pytest

from coin_lightning.data.records import DataError
from coin_lightning.data.template_files import load_flan_templates, load_own_templates, load_template_bank


def test_own_yaml_loader_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("t: [unclosed\n")
    with pytest.raises(DataError, match="bad.yaml: not valid YAML"):
        load_own_templates([bad])
    dup = tmp_path / "dup.yaml"
    dup.write_text("cola:\n  - 'x {sentence}'\n")
    with pytest.raises(DataError, match="cola.*already defined"):
        load_own_templates([dup, dup])
    pos = tmp_path / "pos.yaml"
    pos.write_text("t:\n  - 'x {}'\n")
    with pytest.raises(DataError, match="positional"):
        load_own_templates([pos])
    good = tmp_path / "good.yaml"
    good.write_text("t:\n  - 'x {a}'\n  - {input: 'y {a}', target: '{a}!'}\n")
    bank = load_template_bank(good)
    assert [(t.input, t.target) for t in bank.for_task("t")] == [("x {a}", "{answer}"), ("y {a}", "{a}!")]


def test_flan_json_errors(tmp_path):
    with pytest.raises(DataError, match="no such template file"):
        load_flan_templates(tmp_path / "missing.json")
    p = tmp_path / "t.json"
    p.write_text('{"t": [{"input": "x"}]}')
    with pytest.raises(DataError, match="task 't' template 0"):
        load_flan_templates(p)
