"""Representation analysis: cosine similarity of clean vs perturbed pooled states, projections."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from coin_lightning.analyze import run as analyze
from coin_lightning.conf import CONFIG_DIR
from coin_lightning.eval.engine.predict import Predictor
from coin_lightning.eval.engine.representations import paired_cosine, project, similarity_summary
from coin_lightning.eval.run import build_instruction_set, load_tasks
from coin_lightning.eval.settings import EvalSettings
from tests.eval.eval_helpers import capture_figures, tiny


def test_paired_cosine_against_the_formula():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    b = torch.tensor([[0.0, 2.0], [2.0, 2.0], [-3.0, -4.0]])
    assert paired_cosine(a, b).tolist() == pytest.approx([0.0, 1.0, -1.0])


def test_last_hidden_is_the_last_prompt_token_state():
    model, tok = tiny()
    p = Predictor(model, tok, batch_size=2)
    contents = ["Sentence 1: a b c d e f. Sentence 2: g.", "Sentence 1: x. Sentence 2: y.", "Sentence 1: q r. Sentence 2: s t u."]
    states = p.last_hidden("Decide entailment.", contents)
    for i, c in enumerate(contents):
        ids = torch.tensor([p.encode([p.prompt("Decide entailment.", c)])[0]])
        with torch.inference_mode():
            ref = model(ids, output_hidden_states=True).hidden_states[-1][0, -1]
        torch.testing.assert_close(states[i], ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("pooling,eos", [("last", False), ("last", True), ("mean", True), ("last_prompt", False)])
def test_states_with_answers_are_pooled_as_training_pools(pooling, eos):
    model, tok = tiny()
    p = Predictor(model, tok, batch_size=2)
    contents = ["Sentence 1: a b c d e f. Sentence 2: g.", "Sentence 1: x. Sentence 2: y.", "Sentence 1: q r. Sentence 2: s t u."]
    answers = ["entailment", "not_entailment", "entailment"]
    states = p.last_hidden("Decide entailment.", contents, answers, pooling, eos)
    for i, c in enumerate(contents):  # each row alone: prompt ids, then the answer's, then EOS
        prompt = p.encode([p.prompt("Decide entailment.", c)])[0]
        ids = prompt + tok(answers[i], add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if eos else [])
        with torch.inference_mode():
            h = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
        want = {"last": h[-1], "mean": h.mean(0), "last_prompt": h[len(prompt) - 1]}[pooling]
        torch.testing.assert_close(states[i], want, atol=1e-4, rtol=1e-4)
    if pooling == "last_prompt":  # the answer changes nothing before it: the prefix-cached prompt path agrees
        torch.testing.assert_close(states, p.last_hidden("Decide entailment.", contents), atol=1e-4, rtol=1e-4)


def test_similarity_summary_pairs_by_task_and_index():
    def s(t, p, lv, i, x):
        return {"task": t, "perturbation": p, "level": lv, "index": i, "states": torch.tensor(x)}
    states = [s("rte", "clean", "clean", 0, [[1.0, 0.0]]), s("rte", "clean", "clean", 1, [[0.0, 1.0]]),
              s("rte", "checklist", "sentence", 0, [[1.0, 1.0]]), s("rte", "checklist", "sentence", 1, [[0.0, 2.0]])]
    out = similarity_summary(states)
    assert out["per_level"]["sentence"] == pytest.approx((1 / math.sqrt(2) + 1.0) / 2)
    assert out["n_pairs"] == 2
    with pytest.raises(ValueError, match="clean"):
        similarity_summary(states[2:])


def test_pca_projection_shape():
    x = np.random.default_rng(0).normal(size=(12, 8))
    y = project(x, "pca")
    assert y.shape == (12, 2)
    with pytest.raises(ValueError, match="projection"):
        project(x, "tsne")


@pytest.mark.slow
def test_umap_projection_shape():
    x = np.random.default_rng(0).normal(size=(20, 8)).astype("float32")
    assert project(x, "umap", n_neighbors=5).shape == (20, 2)


def test_analyze_entry_point(tmp_path, shared_data, monkeypatch):
    from coin_lightning.eval.reports import plots

    figures = capture_figures(monkeypatch, plots)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="analyze", overrides=[
            "model=tiny_llama", f"data.root={shared_data / 'glue'}", "eval.tasks=[rte]", "eval.samples_per_task=3",
            "analyze.rows=3", "eval.levels=[clean,sentence]", "eval.perturb.perturbations=[checklist,stresstest]",
            "analyze.projection=pca", "loss.pooling=last_prompt"])
    with open_dict(cfg):
        cfg.output_dir = str(tmp_path)
    summary = analyze(cfg)
    saved = json.loads((tmp_path / "analysis.json").read_text())
    assert saved["overall"] == pytest.approx(summary["overall"])
    assert set(saved["per_perturbation"]) == {"checklist", "stresstest"}
    assert saved["n_pairs"] == 2 * 3  # instruction 0 only, 2 perturbations x 3 rows
    assert saved["run"]["pooling"] == "last_prompt"
    # independent: each prompt alone through the plain model, its last token's final hidden state, and the
    # cosine of each row's clean and perturbed states, averaged by hand
    settings = EvalSettings.from_config(cfg.eval)
    (task,) = load_tasks(settings, cfg.data.root)
    model, tok = tiny()
    prompter = Predictor(model, tok, cfg.prompt_format, prompt_layout=settings.prompt_layout)
    states = {}
    for entry in build_instruction_set(settings, ["rte"]).entries("rte"):
        if entry.index == 0:
            with torch.inference_mode():
                states[entry.perturbation] = np.stack([
                    model(torch.tensor([prompter.encode([prompter.prompt(entry.instruction, c)])[0]]),
                          output_hidden_states=True).hidden_states[-1][0, -1].double().numpy()
                    for c in task.contents[:3]])
    assert set(states) == {"clean", "checklist", "stresstest"}
    clean = states.pop("clean")
    cosines = {p: [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(clean, x)] for p, x in states.items()}
    for p, values in cosines.items():
        assert saved["per_perturbation"][p] == pytest.approx(np.mean(values), abs=2e-6)
    everything = [v for values in cosines.values() for v in values]  # cosines near 1: agree to ~1e-7
    assert saved["overall"] == pytest.approx(np.mean(everything), abs=2e-6)
    assert saved["per_level"] == pytest.approx({"sentence": np.mean(everything)}, abs=2e-6)
    assert min(everything) < 1 - 1e-3  # the perturbations do move the states (a constant 1 would prove little)
    # the figure: one panel (rte), the 3 clean and 2 x 3 perturbed states, one scatter per level
    assert (tmp_path / "representations.png").read_bytes().startswith(b"\x89PNG")
    fig = figures[tmp_path / "representations.png"]
    ax = fig.axes[0]
    assert ax.get_title() == "rte"
    points = {}
    for c in ax.collections:
        points[c.get_label()] = points.get(c.get_label(), 0) + len(c.get_offsets())
    assert points == {"clean": 3, "sentence": 6}
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["clean", "sentence"]
