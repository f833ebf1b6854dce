"""docs/EXTENDING.md, recipe 2: a new perturbation is one module that registers a ``Perturbation``.

The toy operator defined here, ``shout``, upper-cases up to ``character.max_words`` random words; the
test follows the recipe and checks the operator through every public path: the ``eval.perturb``
schema, generated instruction sets and the adversarial search space.
"""
from __future__ import annotations

import random
import re

import pytest

from coin_lightning.eval.instructions.defaults import perturb_instruction_set
from coin_lightning.eval.instructions.perturb import (
    PERTURBATIONS,
    Perturbation,
    PerturbConfig,
    apply,
    generated,
    instruction_rng,
    level_of,
    neighbour_fn,
    register,
)
from coin_lightning.eval.instructions.perturb.text import edit_words, word_space
from coin_lightning.eval.instructions.sets import InstructionSet

CLEAN = "Tell whether the review below likes the film. Reply with positive or negative."
LABELS = ("positive", "negative")


# --- the recipe: the plug-in module -------------------------------------------------------------
def shout(text: str, rng: random.Random, protected=(), *, max_words: int = 2) -> str:
    """Upper-case up to ``max_words`` random content words (never a protected one)."""
    return edit_words(text, rng, protected, max_words, lambda w, r: w.upper())


def shout_space(clean, rng, protected, cfg):
    return word_space(clean, protected, lambda w: [w.upper()], cfg.character.max_words, rng,
                      cfg.adversarial.candidates_per_step)


@pytest.fixture
def registered():
    register(Perturbation("shout", "character", shout, "character", ("max_words",), shout_space))
    yield
    del PERTURBATIONS["shout"]
# ------------------------------------------------------------------------------------------------


def shouted(text: str) -> set[str]:
    return {w for w in re.findall(r"[A-Za-z]+", text) if w.isupper() and len(w) > 1}


def test_a_registered_perturbation_joins_the_default_set_at_its_level(registered):
    assert generated() == ("deepwordbug", "textbugger", "shout", "textfooler", "bertattack", "checklist", "stresstest")
    assert level_of()["shout"] == "character"
    cfg = PerturbConfig.from_cfg({"perturbations": ["shout", "checklist"], "character": {"max_words": 3}})
    assert cfg.levels["shout"] == "character" and cfg.strength("shout") == {"max_words": 3}


def test_the_registry_is_back_to_promptbench_after_the_plug_in_is_removed():
    assert "shout" not in generated() and len(generated()) == 6


def test_apply_passes_the_configured_strength_and_protects_label_words(registered):
    out = apply("shout", CLEAN, random.Random(5), LABELS, {"character": {"max_words": 3}})
    assert len(shouted(out)) == 3 and not shouted(out) & {w.upper() for w in LABELS}
    assert out.lower() == CLEAN.lower()  # only case changed
    assert out == shout(CLEAN, random.Random(5), LABELS, max_words=3)


def test_generated_instruction_sets_hold_the_new_perturbation(registered):
    base = InstructionSet({"clean": {"sst2": (CLEAN, "Is the review below favourable? Say positive or negative.")}})
    cfg = {"perturbations": ["shout"], "character": {"max_words": 1}, "seed": 7}
    iset = perturb_instruction_set(base, cfg, protected=lambda task: LABELS)
    assert iset.level("shout") == "character"
    for i, clean in enumerate(base.instructions["clean"]["sst2"]):  # recomputed by hand from the recipe's operator
        assert iset.instructions["shout"]["sst2"][i] == shout(clean, instruction_rng(7, "shout", "sst2", i), LABELS, max_words=1)


def test_the_adversarial_search_space_adds_one_shouted_word_per_step(registered):
    candidates = neighbour_fn("shout", CLEAN, random.Random(0), LABELS, {"character": {"max_words": 2}})
    first = candidates(CLEAN)
    assert first and all(len(shouted(c)) == 1 for c in first)
    second = candidates(first[0])
    assert second and all(len(shouted(c)) == 2 and shouted(first[0]) < shouted(c) for c in second)
    assert candidates(second[0]) == []  # max_words reached
