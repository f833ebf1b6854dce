"""The ``eval.perturb`` config group and its dataclass (coin_lightning.eval.instructions.perturb.config)."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from coin_lightning.eval.instructions.perturb.config import PerturbConfig
from tests.helpers import PROMPTBENCH_LEVELS

CONF = Path(__file__).resolve().parents[3] / "src" / "coin_lightning" / "conf"
GROUP_FILE = CONF / "eval" / "perturb" / "default.yaml"


def test_group_file_matches_the_dataclass_defaults():
    node = OmegaConf.load(GROUP_FILE)
    assert list(node.pop("defaults")) == ["schema", "_self_"]  # the file starts from the PerturbConfig schema
    assert PerturbConfig.from_cfg(node) == PerturbConfig()
    assert dict(PerturbConfig().levels) == PROMPTBENCH_LEVELS  # written out by hand: the registry holds PromptBench's
    assert PerturbConfig().perturbations == tuple(p for p in PROMPTBENCH_LEVELS if p not in ("clean", "semantic"))


def test_hydra_composes_the_group_under_eval_perturb_with_overrides(tmp_path):
    from hydra import compose, initialize_config_dir

    import coin_lightning.conf  # noqa: F401 - registers the eval/perturb schema the group file starts from

    (tmp_path / "primary.yaml").write_text(
        f"defaults:\n  - eval/perturb: default\n  - _self_\nhydra:\n  searchpath: [file://{CONF}]\n"
    )
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        cfg = compose("primary", overrides=["eval.perturb.character.max_words=4", "eval.perturb.sentence.suffix_count=3"])
    pc = PerturbConfig.from_cfg(cfg.eval.perturb)
    assert pc.character.max_words == 4 and pc.sentence.suffix_count == 3
    assert pc.strength("deepwordbug") == {"max_words": 4, "edits_per_word": 1}
    assert pc.strength("checklist") == {"suffix_count": 3, "suffix_len": 10}


@pytest.mark.parametrize(
    "node, key",
    [
        ({"character": {"max_words": -1}}, "eval.perturb.character.max_words"),
        ({"character": {"max_word": 2}}, "eval.perturb.character.max_word"),
        ({"word": {"candidates": 0}}, "eval.perturb.word.candidates"),
        ({"sentence": {"suffix_len": "ten"}}, "eval.perturb.sentence.suffix_len"),
        ({"perturbations": ["semantic"]}, "eval.perturb.perturbations"),
        ({"levels": {"deepwordbug": "typo"}}, "eval.perturb.levels.deepwordbug"),
        ({"strength": 3}, "eval.perturb.strength"),
    ],
)
def test_bad_values_name_the_key(node, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        PerturbConfig.from_cfg(node)
