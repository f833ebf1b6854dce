"""``coin-compare`` (or ``python -m coin_lightning.compare``): compare evaluation runs, or plot a perturbation-strength sweep.

Examples::

    coin-compare RUN_BASE RUN_CONTINUAL RUN_COIN --names base continual coin
    coin-compare RUN_CONTINUAL RUN_COIN --bootstrap 2000   # CIs of coin - continual
    coin-compare --sweep outputs/train/multiruns/<time>   # arms across seeds
    coin-compare --sweep DIR --reference loss.lambda=0 --bootstrap 2000
    coin-compare --sweep outputs/evaluate/multiruns/<time>   # eval.perturb.* sweep: accuracy vs strength

Writes ``comparison.md``/``.json``/``.png`` and ``differences.png`` (the paired differences per level
with their bootstrap intervals) (or, for ``--sweep``, ``comparison.md``/``.json`` with
``accuracy_by_level.png``, ``consistency.png`` and ``differences.png``, or ``sweep.*`` for a strength
sweep) into ``--out``
(default: the current directory's ``outputs/compare/<time>``) and prints the table. A sweep's jobs
keep their evaluation in the job directory or its ``eval/`` subdirectory
(:mod:`coin_lightning.eval.scoring.sweep`). Runs that scored different rows or used different instructions,
arms with different seed sets and a negative ``--bootstrap`` are refused (exit status 2 with a
one-line message).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markdown import Markdown

from coin_lightning.commands import examples, quiet_third_party
from coin_lightning.errors import reported, take_verbose_flag
from coin_lightning.eval.reports.comparison import write_comparison, write_sweep
from coin_lightning.eval.scoring.comparison import ComparisonError


def main(argv: list[str] | None = None) -> int:
    """Parse the command line (see the module docstring), run the comparison; return the exit status 0.

    Raises:
        SystemExit: status 2 after a one-line ``error:`` for bad input (:func:`coin_lightning.errors.reported`).
    """
    p = argparse.ArgumentParser(
        prog="coin-compare", description=examples(__doc__, "coin-compare"), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", help="evaluation run directories (two or more); the first is the baseline")
    p.add_argument("--names", nargs="+", help="a label per run (default: adapter or model name)")
    p.add_argument("--sweep", metavar="DIR", help="a Hydra multirun directory: arms compared across seeds, or "
                   "(only eval.perturb.* varying, or --param) accuracy against the swept value")
    p.add_argument("--param", help="plot accuracy against this swept override key (default for eval.perturb.* sweeps: the one that varies)")
    p.add_argument("--reference", metavar="ARM", help="--sweep: the reference arm, e.g. loss.lambda=0 (default: the first)")
    p.add_argument("--seed-key", default="seed", help="--sweep: the override that numbers the seeds of an arm")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="B",
                   help="paired bootstrap replicates for 95%% intervals of every delta (rows and instructions "
                   "resampled, and seeds with --sweep); 0 = none")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws")
    p.add_argument("--out", help="output directory (default: outputs/compare/<time>)")
    quiet_third_party()
    args = p.parse_args(take_verbose_flag(sys.argv[1:] if argv is None else list(argv)))
    out = Path(args.out or f"outputs/compare/{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    console = Console()
    with reported(status=2):
        if args.sweep:
            if args.runs:
                raise ComparisonError("give either run directories or --sweep, not both")
            text = write_sweep(args.sweep, out, args.param, args.reference, args.bootstrap, args.seed, args.seed_key)
        else:
            text = write_comparison(args.runs, out, args.names, args.bootstrap, args.seed)
    console.print(Markdown(text))
    console.print(f"[bold]Outputs:[/bold] {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
