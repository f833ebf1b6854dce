"""The measuring process of ``python -m experiments.benchmarks.commits``: runs inside one source tree.

Started as ``python <this file> --tree T ...`` with ``PYTHONPATH=T/src`` and ``T`` as the working
directory, so ``coin_lightning`` and its configs (``$COIN_LIGHTNING_CONF``) are that tree's. It imports nothing from
``experiments/`` and uses only entry points every tree has: Hydra's compose of ``conf/train.yaml``,
``coin_lightning.training.run.build`` (the training entry point's module, with the tree's default
model speed-ups), ``CoinModule.compute`` and ``coin_lightning.eval.predict.Predictor.predict``.
Code that must adapt to an API that differs between trees belongs in :func:`build_module` and
:func:`make_predictor` only.

Protocol: one JSON command per line on stdin (``{"op": "setup"}``, ``{"op": "time", "what": "coin"}``,
``{"op": "quit"}``), one JSON reply per line on the original stdout; everything the libraries print
goes to stderr.

Every measurement starts from the same weights (the fresh LoRA, its B matrices zero), so the CoIN
step's losses are those of the base model whatever the dropout masks, and ``generate`` decodes the
same tokens in every round: both trees do the same work in every round.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

MEASUREMENTS = ("coin", "rank", "generate")
"""What one round times: a CoIN training step per batch, ``rank`` and ``generate`` on every row."""


def build_module(cfg):
    """``(CoinModule, tokenizer)`` as the training entry point builds them from a composed ``train.yaml``."""
    import coin_lightning.conf as conf
    from coin_lightning.training.run import build

    # trees that parse the config once hand build a typed job (conf.train_run); older ones the config itself
    module, datamodule, _trainer = build(conf.train_run(cfg) if hasattr(conf, "train_run") else cfg)
    return module, datamodule.tokenizer


def make_predictor(model, tokenizer, method: str, batch_size: int, max_new_tokens: int):
    """The evaluation's ``Predictor`` with its default settings (prefix cache on, the tree's own
    decoding batch), from ``coin_lightning.eval.engine.predict`` or, in a tree without the
    ``eval.engine`` package, ``coin_lightning.eval.predict``."""
    import importlib

    try:
        Predictor = importlib.import_module("coin_lightning.eval.engine.predict").Predictor
    except ModuleNotFoundError:
        Predictor = importlib.import_module("coin_lightning.eval.predict").Predictor
    return Predictor(model, tokenizer, method=method, batch_size=batch_size, max_new_tokens=max_new_tokens,
                     prefix_cache=True)


class Probe:
    """The model, optimizer, inputs and predictors of one tree, and the timed calls on them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def setup(self) -> dict:
        """Compose the config, build the module, then run every measurement once (the warm-up round).

        Returns:
            Where ``coin_lightning`` was imported from, the loss settings, the warm-up times, the
            step's losses and every row's prediction (``rank``: label ids and scores; ``generate``:
            label ids and decoded answers).
        """
        import torch
        from hydra import compose, initialize_config_dir
        from hydra.utils import instantiate

        import coin_lightning
        import coin_lightning.conf  # noqa: F401  (registers the config schemas, in trees that have them)

        a = self.args
        torch.set_num_threads(a.threads)
        conf = os.environ.get("COIN_LIGHTNING_CONF") or str(a.tree / "conf")  # set by commits.py for this tree
        with initialize_config_dir(config_dir=conf, version_base="1.3"):
            cfg = compose("train", overrides=[f"model={a.model}", f"output_dir={a.workdir / 'job'}"])
        t0 = time.perf_counter()
        self.module, self.tokenizer = build_module(cfg)
        self.model = self.module.model
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = instantiate(cfg.optimizer)(trainable)
        self.initial = [p.detach().clone() for p in trainable]
        self.trainable = trainable
        inputs = torch.load(a.inputs, weights_only=True)
        self.batches, self.rows = inputs["batches"], inputs["eval"]
        self.predictors = {m: make_predictor(self.model, self.tokenizer, m, self.rows["batch_size"],
                                             self.rows["max_new_tokens"]) for m in ("rank", "generate")}
        build_s = time.perf_counter() - t0
        warm = {m: self.time(m) for m in MEASUREMENTS}
        return {
            "coin_lightning": str(Path(coin_lightning.__file__).resolve()),
            "loss": {k: cfg.loss.get(k) for k in ("lambda", "temperature")},
            "model": str(cfg.model.name_or_path),
            "threads": torch.get_num_threads(),
            "build_s": build_s,
            "warmup": warm,
        }

    def _restore(self) -> None:
        import torch

        with torch.no_grad():
            for p, p0 in zip(self.trainable, self.initial):
                p.copy_(p0)
        self.optimizer.zero_grad(set_to_none=True)

    def _coin(self) -> dict:
        losses = []
        for batch in self.batches:
            out = self.module.compute(batch)
            out.loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            nce = getattr(out, "info_nce", None)
            losses.append({"loss": float(out.loss), "ce": float(out.ce), "info_nce": None if nce is None else float(nce)})
        return {"losses": losses}

    def _predict(self, method: str) -> dict:
        r = self.rows
        preds = self.predictors[method].predict(r["instruction"], r["contents"], r["label_words"])
        if method == "rank":
            return {"pred": [p.pred for p in preds], "scores": [p.scores for p in preds]}
        return {"pred": [p.pred for p in preds], "answer": [p.answer for p in preds]}

    def time(self, what: str) -> dict:
        """Run one measurement from the initial weights; wall-clock and process CPU seconds and its output."""
        import torch

        if what not in MEASUREMENTS:
            raise ValueError(f"unknown measurement {what!r}")
        self._restore()
        torch.manual_seed(self.args.seed)
        self.model.train(what == "coin")  # LoRA dropout in the training step only
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        out = self._coin() if what == "coin" else self._predict(what)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        return {"what": what, "wall_s": wall, "cpu_s": cpu, "output": out}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options given by the parent process."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", type=Path, required=True, help="the source tree measured")
    p.add_argument("--inputs", type=Path, required=True, help="torch file: training batches and evaluation rows")
    p.add_argument("--model", required=True, help="conf/model/<name>.yaml of the tree")
    p.add_argument("--threads", type=int, required=True, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0, help="torch seed before every measurement")
    p.add_argument("--workdir", type=Path, required=True, help="scratch directory (output_dir of the job)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Serve commands until ``quit``; an exception is replied as ``{"error": ...}`` and ends the process."""
    args = parse_args(argv)
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # library output (Lightning, rich, warnings) goes to stderr, the protocol keeps stdout
    sys.stdout = sys.stderr
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    probe = Probe(args)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        try:
            reply = probe.setup() if cmd["op"] == "setup" else probe.time(cmd["what"])
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which names the tree
            import traceback

            traceback.print_exc()
            first = (str(exc).strip().splitlines() or [""])[0]
            replies.write(json.dumps({"error": f"{type(exc).__name__}: {first}"}) + "\n")
            return 1
        replies.write(json.dumps(reply) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
