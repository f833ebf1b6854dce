"""Representation analysis (CoIN paper, Sec. 5): how far perturbing an instruction moves the model's
representation of the same input.

For each task, row and clean instruction ``i``, the final-layer hidden states of the row under the clean
instruction, pooled as training pools them (``loss.pooling``, :func:`coin_lightning.losses.pool_hidden`: with
``last`` or ``mean``, over the prompt followed by the row's gold answer and, with ``data.append_eos``,
EOS; with ``last_prompt``, at the prompt's last token), are paired with those under each perturbation's
instruction ``i``. Reported: the mean cosine
similarity of the pairs (per task, perturbation, level and overall; 1 = unchanged), and a 2-D
projection (UMAP, McInnes et al. 2018, or PCA) of all states for a scatter plot.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from coin_lightning.errors import EvalConfigError
from coin_lightning.eval.engine.predict import Predictor
from coin_lightning.eval.engine.tasks import EvalTask
from coin_lightning.eval.instructions.sets import InstructionSet

PROJECTIONS = ("umap", "pca")


def paired_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of row ``n`` of ``a`` with row ``n`` of ``b``: Float ``[N, H]`` x2 -> ``[N]``."""
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)


def project(x: np.ndarray, method: str = "umap", seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """Project ``[M, H]`` vectors to ``[M, 2]`` with UMAP (umap-learn) or PCA (scikit-learn).

    Raises:
        EvalConfigError (a ValueError): unknown method, or fewer than 3 vectors.
    """
    if method not in PROJECTIONS:
        raise EvalConfigError(f"analyze.projection={method!r}; choose one of {', '.join(PROJECTIONS)}")
    if len(x) < 3:
        raise EvalConfigError(f"need at least 3 hidden states to project, got {len(x)}")
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x)
    import umap

    reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, len(x) - 1), random_state=seed, n_jobs=1)
    return reducer.fit_transform(x)


def collect_states(predictor: Predictor, tasks: Sequence[EvalTask], iset: InstructionSet, rows: int,
                   instruction_index: int | None = None, pooling: str = "last_prompt", eos: bool = False) -> list[dict]:
    """Pooled hidden states for each (task, perturbation, instruction) on the first ``rows`` rows.

    Args:
        pooling: ``loss.pooling`` of the adapter's training; all but ``last_prompt`` pool the prompt followed
            by the row's gold answer word (and EOS with ``eos``).
        eos: ``data.append_eos`` of the adapter's training.

    Returns:
        Dicts ``{task, perturbation, level, index, states: Float [N, H]}``; clean entries first.

    Raises:
        ValueError: an unknown ``pooling``.
    """
    out = []
    for task in tasks:
        contents = task.contents[:rows]
        answers = None if pooling == "last_prompt" else [task.label_words[g] for g in task.golds[:rows]]
        for entry in iset.entries(task.name):
            if instruction_index is not None and entry.index != instruction_index:
                continue
            out.append({"task": task.name, "perturbation": entry.perturbation, "level": entry.level,
                        "index": entry.index, "states": predictor.last_hidden(entry.instruction, contents, answers, pooling, eos)})
    return out


def similarity_summary(states: Sequence[dict]) -> dict:
    """Mean cosine similarity between clean and perturbed states of the same (task, index, row).

    Returns:
        ``{"overall": float, "per_level": {level: float}, "per_perturbation": {p: float},
        "per_task": {task: {level: float}}, "n_pairs": int}``.

    Raises:
        EvalConfigError (a ValueError): no clean states, or no perturbed state with a clean partner.
    """
    clean = {(s["task"], s["index"]): s["states"] for s in states if s["perturbation"] == "clean"}
    if not clean:
        raise EvalConfigError("representation analysis needs the clean instructions (keep 'clean' in eval.levels)")
    by_level, by_pert, by_task = defaultdict(list), defaultdict(list), defaultdict(lambda: defaultdict(list))
    everything = []
    for s in states:
        base = clean.get((s["task"], s["index"]))
        if s["perturbation"] == "clean" or base is None:
            continue
        sims = paired_cosine(base, s["states"]).tolist()
        for group in (by_level[s["level"]], by_pert[s["perturbation"]], by_task[s["task"]][s["level"]], everything):
            group.extend(sims)
    if not everything:
        raise EvalConfigError("no perturbed instruction has a clean partner (same task and index)")

    def mean(xs):
        return float(sum(xs) / len(xs))

    return {
        "overall": mean(everything),
        "per_level": {k: mean(v) for k, v in by_level.items()},
        "per_perturbation": {k: mean(v) for k, v in by_pert.items()},
        "per_task": {t: {k: mean(v) for k, v in d.items()} for t, d in by_task.items()},
        "n_pairs": len(everything),
    }
