"""Embedded tasks: small synthetic tasks generated offline and deterministically from a seed.

Each task draws an input and *computes* its answer from that input (never the other way round), so
a test can verify every label by re-computation. The kinds cover CoIN's settings: binary and 3-way
classification (answers are option words by label id, like GLUE) and short-answer generation
(``Record.target`` is a number or a few words).

| task | kind | fields | answer |
|---|---|---|---|
| ``embedded_arith_truth`` | binary | equation | false / true: does ``a op b = c`` hold |
| ``embedded_parity`` | binary | number | even / odd |
| ``embedded_composite`` | binary | number (odd, < 100000) | no / yes: is it composite ("Is 391 a composite number?") |
| ``embedded_anagram`` | binary | word1, word2 | no / yes: same letters in another order |
| ``embedded_number_compare`` | 3-way | a, b | less / equal / greater: ``a`` compared to ``b`` |
| ``embedded_sign`` | 3-way | expression | negative / zero / positive: sign of ``a - b`` |
| ``embedded_sort_words`` | generation | words | the words in alphabetical order, space-separated |
| ``embedded_count_words`` | generation | text | number of words |
| ``embedded_max_number`` | generation | numbers | the largest number |

Splits are disjoint by construction: an input belongs to ``test`` iff a hash of (task, fields) is
0 mod 10, so ``train`` and ``test`` records never share an input whatever the seeds and sizes.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from coin_lightning.data.records import DataError, Record
from coin_lightning.data.sources.base import EvalSpec, Source

WORDS: tuple[str, ...] = (
    "apple", "arrow", "badge", "baker", "beach", "bread", "brick", "cable", "camel", "candle",
    "cargo", "chair", "chalk", "cloud", "coral", "crane", "daisy", "delta", "diner", "dream",
    "eagle", "earth", "elbow", "ember", "fable", "feast", "fence", "flute", "frost", "giant",
    "glove", "grape", "guide", "habit", "harbor", "hazel", "honey", "house", "igloo", "index",
    "ivory", "jelly", "jewel", "judge", "kettle", "knife", "koala", "label", "lemon", "lilac",
    "linen", "lunar", "mango", "maple", "marble", "meadow", "metal", "mirror", "noble", "north",
    "novel", "nurse", "ocean", "olive", "onion", "orbit", "paint", "panda", "pearl", "pilot",
    "plume", "quartz", "queen", "quiet", "radar", "raven", "river", "robin", "salad", "sauce",
    "shelf", "silver", "spoon", "table", "tiger", "tulip", "uncle", "union", "urban", "valley",
    "velvet", "violin", "wagon", "walnut", "whale", "window", "yacht", "yellow", "zebra", "zinc",
    "cat", "dog", "sun", "map", "red", "blue", "cup", "hat", "pen", "box",
    "fig", "owl", "ant", "bee", "car", "key", "log", "net", "oak", "pie",
)
"""Vocabulary of the word tasks: lowercase, distinct, 3 to 6 letters."""

MAX_STALE_DRAWS = 20_000
"""Consecutive draws without a new input after which a task counts as exhausted."""

SPLITS = ("train", "test")
"""Generated splits; ``validation`` is accepted as a name for ``test``."""


@dataclass(frozen=True)
class EmbeddedTask:
    """Definition of one embedded task."""

    name: str
    """Task name (``embedded_*``), the key into the template bank."""
    kind: str
    """``binary``, ``3-way`` or ``generation``."""
    options: tuple[str, ...] | None
    """Answer words by label id for classification tasks; ``None`` for generation."""
    draw: Callable[[random.Random, int], dict]
    """``draw(rng, k)``: sample the fields of one input; ``k`` is a class hint for balancing
    (``i % n_classes``; ignored by generation tasks). The answer is *not* taken from ``k``."""
    solve: Callable[[dict], int | str]
    """Compute the answer from the fields: a label id (classification) or the target text."""


def _is_prime(n: int) -> bool:
    return n == 2 or (n > 2 and n % 2 == 1 and all(n % f for f in range(3, math.isqrt(n) + 1, 2)))


# --- arithmetic truth -------------------------------------------------------------------------
def _draw_arith(rng: random.Random, k: int) -> dict:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    op = rng.choice("+-")
    value = a + b if op == "+" else a - b
    claimed = value if k == 1 else value + rng.choice([-1, 1]) * rng.randint(1, 10)
    return {"equation": f"{a} {op} {b} = {claimed}"}


def _solve_arith(f: dict) -> int:
    lhs, rhs = f["equation"].split(" = ")
    a, op, b = lhs.split(" ")
    value = int(a) + int(b) if op == "+" else int(a) - int(b)
    return int(value == int(rhs))


# --- parity -----------------------------------------------------------------------------------
def _draw_parity(rng: random.Random, k: int) -> dict:
    return {"number": str(2 * rng.randint(0, 49999) + k)}


def _solve_parity(f: dict) -> int:
    return int(f["number"]) % 2


# --- composite --------------------------------------------------------------------------------
def _draw_composite(rng: random.Random, k: int) -> dict:
    # odd numbers only, so that "even => composite" is no shortcut; class hint k=1 asks for a composite
    while True:
        n = 2 * rng.randint(5, 49999) + 1
        if _is_prime(n) != bool(k):
            return {"number": str(n)}


def _solve_composite(f: dict) -> int:
    return int(not _is_prime(int(f["number"])))


# --- anagram ----------------------------------------------------------------------------------
def _draw_anagram(rng: random.Random, k: int) -> dict:
    word = rng.choice([w for w in WORDS if len(set(w)) >= 3])
    letters = list(word)
    while True:
        rng.shuffle(letters)
        other = "".join(letters)
        if other != word:
            break
    if k == 0:  # change one letter: the letter multiset differs, so it is no anagram
        i = rng.randrange(len(other))
        repl = rng.choice([c for c in "abcdefghijklmnopqrstuvwxyz" if c != other[i]])
        other = other[:i] + repl + other[i + 1:]
    return {"word1": word, "word2": other}


def _solve_anagram(f: dict) -> int:
    return int(f["word1"] != f["word2"] and sorted(f["word1"]) == sorted(f["word2"]))


def _operands(rng: random.Random, k: int, high: int) -> tuple[int, int]:
    """Two integers in ``[0, high]``: equal for class ``k == 1``, else distinct (draw order kept)."""
    a = rng.randint(0, high)
    if k == 1:
        return a, a
    b = rng.randint(0, high)
    while b == a:
        b = rng.randint(0, high)
    return a, b


# --- number comparison (3-way) ----------------------------------------------------------------
def _draw_compare(rng: random.Random, k: int) -> dict:
    a, b = _operands(rng, k, 9999)
    return {"a": str(a), "b": str(b)}


def _solve_compare(f: dict) -> int:
    a, b = int(f["a"]), int(f["b"])
    return 0 if a < b else 1 if a == b else 2


# --- sign of a difference (3-way) -------------------------------------------------------------
def _draw_sign(rng: random.Random, k: int) -> dict:
    a, b = _operands(rng, k, 1999)
    return {"expression": f"{a} - {b}"}


def _solve_sign(f: dict) -> int:
    a, b = (int(x) for x in f["expression"].split(" - "))
    return 0 if a - b < 0 else 1 if a == b else 2


# --- generation tasks -------------------------------------------------------------------------
def _draw_sort(rng: random.Random, k: int) -> dict:
    return {"words": " ".join(rng.sample(WORDS, 3))}


def _solve_sort(f: dict) -> str:
    return " ".join(sorted(f["words"].split()))


def _draw_count(rng: random.Random, k: int) -> dict:
    return {"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9)))}


def _solve_count(f: dict) -> str:
    return str(len(f["text"].split()))


def _draw_max(rng: random.Random, k: int) -> dict:
    return {"numbers": ", ".join(str(n) for n in rng.sample(range(1, 100), 4))}


def _solve_max(f: dict) -> str:
    return str(max(int(x) for x in f["numbers"].split(", ")))


EMBEDDED_TASKS: dict[str, EmbeddedTask] = {
    t.name: t
    for t in (
        EmbeddedTask("embedded_arith_truth", "binary", ("false", "true"), _draw_arith, _solve_arith),
        EmbeddedTask("embedded_parity", "binary", ("even", "odd"), _draw_parity, _solve_parity),
        EmbeddedTask("embedded_composite", "binary", ("no", "yes"), _draw_composite, _solve_composite),
        EmbeddedTask("embedded_anagram", "binary", ("no", "yes"), _draw_anagram, _solve_anagram),
        EmbeddedTask("embedded_number_compare", "3-way", ("less", "equal", "greater"), _draw_compare, _solve_compare),
        EmbeddedTask("embedded_sign", "3-way", ("negative", "zero", "positive"), _draw_sign, _solve_sign),
        EmbeddedTask("embedded_sort_words", "generation", None, _draw_sort, _solve_sort),
        EmbeddedTask("embedded_count_words", "generation", None, _draw_count, _solve_count),
        EmbeddedTask("embedded_max_number", "generation", None, _draw_max, _solve_max),
    )
}
"""All embedded tasks by name."""


def in_test_split(task: str, fields: dict) -> bool:
    """Whether an input belongs to the ``test`` split (hash of task and fields is 0 mod 10)."""
    digest = hashlib.sha1(f"{task}\x00{json.dumps(fields, sort_keys=True)}".encode()).hexdigest()
    return int(digest[:8], 16) % 10 == 0


def load_embedded(
    tasks: Iterable[str] | None = None, n_per_task: int = 200, seed: int = 0, split: str = "train"
) -> list[Record]:
    """Generate records of the embedded tasks.

    Args:
        tasks: task names (default: all of :data:`EMBEDDED_TASKS`).
        n_per_task: records per task; classification tasks are class-balanced (cyclic class hint).
        seed: generation seed; the same (tasks, n_per_task, seed, split) gives the same records.
        split: ``train`` or ``test`` (``validation`` = ``test``); the two never share an input.

    Returns:
        Records with ``label`` (classification) or ``target`` (generation) computed from the fields,
        ``uid = "<task>/<split>/<seed>/<i>"`` and no duplicate input within a task.

    Raises:
        DataError: unknown task or split, or ``n_per_task`` larger than the task can supply.
    """
    split = "test" if split == "validation" else split
    if split not in SPLITS:
        raise DataError(f"unknown embedded split {split!r}; choose one of {', '.join(SPLITS)}")
    records: list[Record] = []
    for name in EMBEDDED_TASKS if tasks is None else tasks:
        if name not in EMBEDDED_TASKS:
            raise DataError(f"unknown embedded task {name!r}; known: {', '.join(EMBEDDED_TASKS)}")
        spec = EMBEDDED_TASKS[name]
        rng = random.Random(f"{seed}/{name}/{split}")
        n_classes = len(spec.options) if spec.options else 1
        seen: set[str] = set()
        stale = 0  # draws since the last new input; the input space is exhausted when it grows large
        while len(seen) < n_per_task:
            fields = spec.draw(rng, len(seen) % n_classes)
            key = json.dumps(fields, sort_keys=True)
            if key in seen or in_test_split(name, fields) != (split == "test"):
                stale += 1
                if stale > MAX_STALE_DRAWS:
                    raise DataError(
                        f"embedded task {name!r}: cannot draw {n_per_task} distinct {split} inputs "
                        f"(got {len(seen)}); use a smaller n_per_task"
                    )
                continue
            stale = 0
            seen.add(key)
            answer = spec.solve(fields)
            i = len(seen) - 1
            records.append(
                Record(
                    task=name,
                    fields=fields,
                    label=answer if spec.options else None,
                    target=None if spec.options else answer,
                    uid=f"{name}/{split}/{seed}/{i}",
                    meta={"source": f"embedded:{name}:{split}:seed={seed}", "row": i},
                )
            )
    return records


class Embedded(Source):
    """``data.source=embedded`` (the default, offline): :func:`load_embedded`; every task evaluates on ``test``."""

    name = "embedded"
    label_words = {name: t.options for name, t in EMBEDDED_TASKS.items() if t.options}
    eval_tasks = {name: EvalSpec(name, "embedded", t.options) for name, t in EMBEDDED_TASKS.items()}

    def records(self, dm: Any, stats: dict) -> list[Record]:
        """:func:`load_embedded` with ``data.tasks``, ``n_per_task``, ``data_seed`` (null: the run's seed) and ``split``."""
        return load_embedded(dm.tasks, dm.n_per_task, dm.seed if dm.data_seed is None else dm.data_seed, dm.split)

    def eval_records(self, name: str, root: str | None, samples: int | None, seed: int) -> list[Record]:
        """``samples`` (300 when null) records of the task's ``test`` split, generated with ``seed``."""
        return load_embedded([name], samples or 300, seed, "test")
