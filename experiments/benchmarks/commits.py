"""``make bench-commits BASE=<rev>`` / ``python -m experiments.benchmarks.commits --base REV [--head REV|worktree]``:
the CoIN training step and the evaluation throughput of two commits, side by side on one machine.

Each side is a source tree: a git revision checked out as a detached ``git worktree`` in a temporary
directory (removed afterwards), or ``worktree``, this repository's working tree as it is. Each tree
is measured by its own process (:mod:`experiments.benchmarks.commit_probe`, ``PYTHONPATH=<tree>/src``,
the tree as working directory, the same torch threads), on the same inputs: training batches and
evaluation rows built once here. Both processes load their model, run one untimed warm-up round, then
``--rounds`` rounds in which every measurement runs on one side and then the other, the first side
alternating between rounds. Writes ``commits-<base>-<head>.json`` and ``.md`` under ``--out``; exits
with 1 when head is more than ``--tolerance`` slower on a measurement or an output differs. Example::

    python -m experiments.benchmarks.commits --base HEAD~1 --head worktree --rounds 5
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from experiments.benchmarks import batches as batches_mod
from experiments.benchmarks.commit_probe import MEASUREMENTS
from experiments.benchmarks.commit_report import compare_outputs, figures, render_markdown, verdict
from experiments.benchmarks.timing import pick_clock

REPO = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).resolve().with_name("commit_probe.py")
DEFAULT_OUT = REPO / "experiments" / "benchmarks" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--help`` lists them with defaults)."""
    p = argparse.ArgumentParser(prog="python -m experiments.benchmarks.commits", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--base", required=True, help="git revision measured as the base")
    p.add_argument("--head", default="worktree", help="git revision, or 'worktree' (this working tree as it is)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds after one warm-up round")
    p.add_argument("--quick", action="store_true", help="1 round, 16 evaluation rows, the embedded training data")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads of both processes")
    p.add_argument("--clock", default="auto", choices=["auto", "wall", "cpu"],
                   help="auto = process CPU time on one thread, else wall-clock (timing.pick_clock)")
    p.add_argument("--tolerance", type=float, default=0.10, help="head may take up to (1 + this) x base's time")
    p.add_argument("--loss-rtol", type=float, default=1e-4, help="relative difference of losses still called equal")
    p.add_argument("--model", default="smollm2_135m", help="conf/model/<name>.yaml, in both trees")
    p.add_argument("--data", default="auto", choices=["auto", "glue", "embedded"],
                   help="training batches and evaluation rows: GLUE from --data-root when present, else embedded")
    p.add_argument("--data-root", type=Path, default=batches_mod.DEFAULT_DATA_ROOT, help="the shared data pack")
    p.add_argument("--batch-pairs", type=int, default=4, help="pairs per training micro-batch (rows = 2 x pairs)")
    p.add_argument("--seq-len", type=int, default=128, help="target padded width of the timed training batch")
    p.add_argument("--eval-rows", type=int, default=64, help="evaluation rows (sst2, or embedded_parity)")
    p.add_argument("--eval-batch-size", type=int, default=16, help="rows per forward pass in evaluation")
    p.add_argument("--max-new-tokens", type=int, default=7, help="generation length of generate")
    p.add_argument("--seed", type=int, default=0, help="seeds the data, the row sample and every measurement")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory of the JSON and markdown results")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.eval_rows, args.data = 1, min(args.eval_rows, 16), "embedded"
    if args.rounds < 1 or args.threads < 1 or args.tolerance < 0 or args.eval_rows < 1:
        p.error("--rounds, --threads and --eval-rows must be >= 1 and --tolerance >= 0")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.clock = pick_clock(args.clock, torch.device("cpu"), args.threads)
    return args


def git(*cmd: str) -> str:
    """Output of ``git -C <repo> <cmd>``; raises SystemExit with git's first error line."""
    proc = subprocess.run(["git", "-C", str(REPO), *cmd], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"error: git {' '.join(cmd)}: {(proc.stderr.strip().splitlines() or ['failed'])[0]}")
    return proc.stdout.strip()


def resolve(rev: str) -> dict[str, Any]:
    """``{"rev", "sha", "label"}`` of a revision (``worktree``: HEAD's sha, ``dirty`` when changed)."""
    if rev == "worktree":
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
        return {"rev": rev, "sha": git("rev-parse", "HEAD"), "label": "worktree", "dirty": dirty}
    sha = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    return {"rev": rev, "sha": sha, "label": sha[:9]}


@contextlib.contextmanager
def checked_out(name: str, side: dict[str, Any], scratch: Path) -> Iterator[Path]:
    """The source tree of one side: the working tree, or a detached worktree removed on exit."""
    if side["rev"] == "worktree":
        yield REPO
        return
    path = scratch / f"tree-{name}"
    git("worktree", "add", "--detach", "--quiet", str(path), side["sha"])
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], capture_output=True, check=False)
        subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], capture_output=True, check=False)


def prepare_inputs(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    """Build the training batches and the evaluation rows with this tree's code and save them for both
    probes (``torch.save``); return their description."""
    from coin_lightning.model.config import read_model_file
    from coin_lightning.model.loading import load_tokenizer

    model_yaml = conf_dir(REPO) / "model" / f"{args.model}.yaml"
    if not model_yaml.is_file():
        raise SystemExit(f"error: --model {args.model}: {model_yaml} does not exist")
    tokenizer = load_tokenizer(read_model_file(model_yaml))
    source = batches_mod.resolve_source(args.data, args.data_root)
    train = batches_mod.train_data(tokenizer, source, args.data_root, args.batch_pairs, args.seq_len, 1, args.seed)
    rows = batches_mod.eval_rows(source, args.data_root, None, args.eval_rows, args.seed)
    evaluation = {"instruction": rows.instruction, "contents": rows.contents, "label_words": list(rows.label_words),
                  "batch_size": args.eval_batch_size, "max_new_tokens": args.max_new_tokens}
    torch.save({"batches": train.batches, "eval": evaluation}, path)
    return {"source": source, "batch_shape": "x".join(map(str, train.batches[0]["input_ids"].shape)),
            "batches": len(train.batches), "eval_task": rows.task, "eval_rows": len(rows.contents)}


def conf_dir(tree: Path) -> Path:
    """The Hydra config directory of a source tree: ``src/coin_lightning/conf`` (in the package), or
    ``conf/`` at the root in older commits."""
    packaged = tree / "src" / "coin_lightning" / "conf"
    return packaged if packaged.is_dir() else tree / "conf"


class Probe:
    """One measuring process (:mod:`experiments.benchmarks.commit_probe`) inside a tree."""

    def __init__(self, name: str, tree: Path, args: argparse.Namespace, inputs: Path, scratch: Path) -> None:
        self.name, self.log = name, scratch / f"{name}.log"
        env = dict(os.environ, PYTHONPATH=str(tree / "src"), COIN_LIGHTNING_CONF=str(conf_dir(tree)),
                   OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
        cmd = [sys.executable, str(PROBE), "--tree", str(tree), "--inputs", str(inputs), "--model", args.model,
               "--threads", str(args.threads), "--seed", str(args.seed), "--workdir", str(scratch / name)]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, cwd=tree, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log, text=True, bufsize=1)

    def send(self, **cmd: Any) -> None:
        """Send one command (:meth:`reply` waits for its answer)."""
        self.proc.stdin.write(json.dumps(cmd) + "\n")

    def reply(self) -> dict[str, Any]:
        """The answer to the last command; SystemExit naming the side and the log's last lines on an error."""
        line = self.proc.stdout.readline()
        reply = json.loads(line) if line.strip() else {"error": f"process ended (status {self.proc.poll()})"}
        if "error" in reply:
            tail = "".join(self.log.read_text().splitlines(keepends=True)[-15:])
            raise SystemExit(f"{tail}\nerror: {self.name}: {reply['error']} (log: {self.log})")
        return reply

    def ask(self, **cmd: Any) -> dict[str, Any]:
        """Send one command and wait for its reply."""
        self.send(**cmd)
        return self.reply()

    def close(self) -> None:
        """Ask the process to quit and wait for it (a process still measuring is killed after 10 s)."""
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # still busy with a measurement (interrupted run)
                self.proc.kill()
                self.proc.wait()


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def measure(args: argparse.Namespace, sides: dict[str, dict], scratch: Path) -> dict[str, Any]:
    """Materialise both trees, run the warm-up and the timed rounds, and collect every reply."""
    inputs = scratch / "inputs.pt"
    described = prepare_inputs(args, inputs)
    _log(f"inputs: {described}")
    with contextlib.ExitStack() as stack:
        trees = {name: stack.enter_context(checked_out(name, side, scratch)) for name, side in sides.items()}
        probes = {name: Probe(name, trees[name], args, inputs, scratch) for name in sides}
        for probe in probes.values():
            stack.callback(probe.close)
        for probe in probes.values():  # both load and warm up at once: nothing is timed yet
            probe.send(op="setup")
        setups = {name: probe.reply() for name, probe in probes.items()}
        for name in sides:
            expected = (trees[name] / "src").resolve()
            if not Path(setups[name]["coin_lightning"]).is_relative_to(expected):
                raise SystemExit(f"error: {name} imported coin_lightning from {setups[name]['coin_lightning']}, "
                                 f"not from {expected}")
            _log(f"{name} ({sides[name]['label']}): built in {setups[name]['build_s']:.1f} s, warm-up " + ", ".join(
                f"{w}: {r['wall_s']:.2f} s" for w, r in setups[name]["warmup"].items()))
        rounds: dict[str, list[dict]] = {f"{n}/{w}": [] for n in sides for w in MEASUREMENTS}
        for r in range(args.rounds):
            order = ["base", "head"] if r % 2 == 0 else ["head", "base"]
            for what in MEASUREMENTS:
                for name in order:
                    rounds[f"{name}/{what}"].append(probes[name].ask(op="time", what=what))
            _log(f"round {r + 1}/{args.rounds}, base/head {args.clock} s: " + ", ".join(
                f"{w} {rounds[f'base/{w}'][-1][f'{args.clock}_s']:.2f}/{rounds[f'head/{w}'][-1][f'{args.clock}_s']:.2f}"
                for w in MEASUREMENTS))
    return {"inputs": described, "setups": setups, "rounds": rounds, "trees": {n: str(t) for n, t in trees.items()}}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure both sides, compare, print the table and write ``commits-<base>-<head>.{json,md}``."""
    from coin_lightning.io import write_json, write_text
    from experiments.benchmarks.machine import machine_info

    sides = {"base": resolve(args.base), "head": resolve(args.head)}  # bad revisions fail before any work
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="coin-bench-commits-") as tmp:
        measured = measure(args, sides, Path(tmp))
    setups, rounds = measured["setups"], measured["rounds"]
    for name in sides:
        tree = Path(measured["trees"][name])
        where = Path(setups[name]["coin_lightning"]).relative_to(tree)  # no path of this machine in the results
        sides[name].update(coin_lightning=str(where) if tree == REPO else f"<{tree.name}>/{where}", loss=setups[name]["loss"])
    outputs = {key: [setups[key.split("/")[0]]["warmup"][key.split("/")[1]]["output"]] + [r["output"] for r in runs]
               for key, runs in rounds.items()}
    inputs = measured["inputs"]
    figs = figures(rounds, args.clock, inputs["batches"], inputs["eval_rows"])
    same = compare_outputs(outputs, args.loss_rtol)
    results = {
        "command": " ".join(["python -m experiments.benchmarks.commits", *args.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_info(torch.device("cpu")),
        "trees": sides,
        "settings": {"model": setups["head"]["model"], "threads": args.threads, "clock": args.clock,
                     "rounds": args.rounds, "seed": args.seed, "eval_batch_size": args.eval_batch_size, **inputs},
        "figures": figs,
        "outputs": same,
        "warmup": {n: {w: r["wall_s"] for w, r in s["warmup"].items()} for n, s in setups.items()},
        "round_cpu_s": {k: [r["cpu_s"] for r in v] for k, v in rounds.items()},
        "predictions": {k: v[0] for k, v in outputs.items() if not k.endswith("/coin")},
        "total_s": time.perf_counter() - started,
    }
    results["verdict"] = verdict(figs, same, args.tolerance)
    stem = f"commits-{sides['base']['label']}-{sides['head']['label']}"
    write_json(args.out / f"{stem}.json", results)
    markdown = render_markdown(results)
    write_text(args.out / f"{stem}.md", markdown)
    print(markdown)
    _log(f"wrote {args.out / stem}.json and .md in {results['total_s']:.0f} s")
    return results


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 when head is within the tolerance with identical outputs, else 1."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the temporary worktrees are removed
    return 0 if run(parse_args(argv))["verdict"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
