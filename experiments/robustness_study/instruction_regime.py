"""The instruction regime of the robustness study: two tasks over the same movie-review sentences and
the same answer words, told apart by the instruction alone.

- ``sst2_positive``: "does the review praise the film?" -> ``yes`` for a positive review, ``no`` otherwise;
- ``sst2_negative``: "does the review pan the film?" -> ``yes`` for a negative review, ``no`` otherwise.

A model that ignores the instruction is at chance on the pair of tasks, so rewording or perturbing the
instruction can cost accuracy, which the single-task sst2 study could not show (README.md, "no room to
improve"). Every instruction below is this project's own wording. The evaluation instructions share no
sentence with the training ones and do not name the answer words (``yes``/``no``), which training
templates sometimes do.

:func:`write_regime` writes, from GLUE sst2 (``<glue>/sst2/{train,validation}.jsonl``):

- ``train.csv``: CoIN triples in the layout of the paper's CSV (``data=coin_csv``): data row ``2k`` an
  instance under template A (``original_instruction``) and under template B (``paraphrased_instruction``),
  row ``2k+1`` the hard negative: another sentence of the same task with the other answer, under the same
  two templates. The rows are ``instruction + "\\n" + sentence``, the layout the evaluation uses.
- ``<task>.yaml``: one ``eval.task_files`` file per task (the validation split, 6 clean and 6 semantic
  instructions).
"""
from __future__ import annotations

import csv
import io
import json
import os
import random
from pathlib import Path

import yaml

TASKS = ("sst2_positive", "sst2_negative")
"""The regime's tasks, both answered ``yes`` or ``no``."""

ANSWER_WORDS = {"sst2_positive": ("no", "yes"), "sst2_negative": ("yes", "no")}
"""Answer by GLUE sst2 label id (0 negative, 1 positive)."""

TRAIN_TEMPLATES = {
    "sst2_positive": (
        "Does the person who wrote this enjoy the movie? Answer yes or no.",
        "Is the following film comment favourable?",
        "Would the critic below recommend the picture? Reply yes or no.",
        "Tell me if this line about a movie speaks well of it.",
        "Is the reviewer pleased with the film described here? yes/no",
        "Check whether the snippet below compliments the movie.",
        "Did the author of this remark like what they watched? Say yes or no.",
        "Is this a positive take on the film?",
        "Does the text below show approval of the movie?",
        "Is the opinion in this excerpt a good one? Respond yes or no.",
    ),
    "sst2_negative": (
        "Does the person who wrote this dislike the movie? Answer yes or no.",
        "Is the following film comment unfavourable?",
        "Would the critic below warn people away from the picture? Reply yes or no.",
        "Tell me if this line about a movie speaks badly of it.",
        "Is the reviewer disappointed with the film described here? yes/no",
        "Check whether the snippet below criticises the movie.",
        "Did the author of this remark hate what they watched? Say yes or no.",
        "Is this a negative take on the film?",
        "Does the text below show disapproval of the movie?",
        "Is the opinion in this excerpt a bad one? Respond yes or no.",
    ),
}
"""Training instructions (CoIN's template pool), 10 per task."""

EVAL_INSTRUCTIONS = {
    "sst2_positive": {
        "clean": (
            "Read the review fragment below. Is the writer's attitude toward the film approving?",
            "Here is a remark from an audience member. Did they have a good time at this movie?",
            "Consider the following sentence from a film review: does it express praise?",
            "Decide whether the viewer who wrote the text below thinks highly of the film.",
            "Below is a piece of movie criticism. Is its verdict on the film a favourable one?",
            "Judge the excerpt below: is the reviewer happy with the movie?",
        ),
        "semantic": (
            "Look at the fragment of a review that follows. Does its author approve of the film?",
            "The remark below comes from someone in the audience. Did the movie please them?",
            "Take this sentence from a critique of a film: is it praising the film?",
            "Judge whether the viewer behind the text below rates the film well.",
            "The following is film criticism. Does it come down in favour of the movie?",
            "Assess the passage below: is its writer satisfied with the movie?",
        ),
    },
    "sst2_negative": {
        "clean": (
            "Read the review fragment below. Is the writer's attitude toward the film disapproving?",
            "Here is a remark from an audience member. Did they have a bad time at this movie?",
            "Consider the following sentence from a film review: does it express contempt?",
            "Decide whether the viewer who wrote the text below thinks poorly of the film.",
            "Below is a piece of movie criticism. Is its verdict on the film an unfavourable one?",
            "Judge the excerpt below: is the reviewer unhappy with the movie?",
        ),
        "semantic": (
            "Look at the fragment of a review that follows. Does its author disapprove of the film?",
            "The remark below comes from someone in the audience. Did the movie displease them?",
            "Take this sentence from a critique of a film: is it attacking the film?",
            "Judge whether the viewer behind the text below rates the film badly.",
            "The following is film criticism. Does it come down against the movie?",
            "Assess the passage below: is its writer dissatisfied with the movie?",
        ),
    },
}
"""Evaluation instructions, unseen in training: 6 clean and 6 semantic paraphrases per task."""


def _read(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _row(task: str, a: str, b: str, rec: dict) -> dict:
    answer = ANSWER_WORDS[task][rec["label"]]
    return {"original_instruction": f"{a}\n{rec['sentence'].strip()}", "paraphrased_instruction": f"{b}\n{rec['sentence'].strip()}",
            "targets": answer, "task_name": task, "keyword_data": json.dumps({"sentence": rec["sentence"].strip()})}


def _replace(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename, so that a job reading it
    (another runner of the study) never sees it half-written; return ``path``."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path


def write_regime(glue: Path, out: Path, groups: int, seed: int = 0) -> dict:
    """Write ``train.csv`` (``groups`` row pairs, the tasks alternating) and the two task files to ``out``.

    Args:
        glue: the GLUE directory (``<glue>/sst2/train.jsonl``, ``validation.jsonl``).
        out: the output directory (created).
        groups: row pairs (an example and its hard negative) in ``train.csv``.
        seed: seed of the sentence and template draws.

    Returns:
        ``{"train_csv": path, "task_files": [paths], "groups": groups}``.

    Raises:
        FileNotFoundError: a missing sst2 split.
    """
    rng = random.Random(seed)
    train = _read(glue / "sst2" / "train.jsonl")
    by_label = {lab: [r for r in train if r["label"] == lab] for lab in (0, 1)}
    rows = []
    for k in range(groups):
        task = TASKS[k % 2]
        a, b = rng.sample(TRAIN_TEMPLATES[task], 2)
        anchor = rng.choice(train)
        negative = rng.choice(by_label[1 - anchor["label"]])  # the other answer, in either task
        rows += [_row(task, a, b, anchor), _row(task, a, b, negative)]
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    path = _replace(out / "train.csv", buf.getvalue())
    files = []
    for task in TASKS:
        spec = {"name": task, "data": str((glue / "sst2" / "validation.jsonl").resolve()), "input_fields": ["sentence"],
                "label_field": "label", "label_words": list(ANSWER_WORDS[task]), "category": "sentiment",
                "instructions": list(EVAL_INSTRUCTIONS[task]["clean"]), "semantic": list(EVAL_INSTRUCTIONS[task]["semantic"])}
        files.append(_replace(out / f"{task}.yaml", yaml.safe_dump(spec, sort_keys=False, width=200)))
    return {"train_csv": str(path), "task_files": [str(f) for f in files], "groups": groups}


if __name__ == "__main__":
    import sys

    print(write_regime(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])))
