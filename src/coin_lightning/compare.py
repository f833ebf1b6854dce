"""``python -m coin_lightning.compare``: compare evaluation runs, or plot a perturbation-strength sweep.

Examples::

    python -m coin_lightning.compare RUN_BASE RUN_CONTINUAL RUN_COIN --names base continual coin
    python -m coin_lightning.compare RUN_CONTINUAL RUN_COIN --bootstrap 2000   # CIs of coin - continual
    python -m coin_lightning.compare --sweep outputs/evaluate/multiruns/<time>

Writes ``comparison.md``/``.json``/``.png`` (or ``sweep.*``) into ``--out`` (default: the current
directory's ``outputs/compare/<time>``) and prints the table. Runs that scored different rows or used
different instructions are refused (exit status 2 with a one-line message).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markdown import Markdown

from coin_lightning.errors import print_user_error, take_verbose_flag
from coin_lightning.eval.comparison import (
    ComparisonError,
    compare_runs,
    comparison_markdown,
    load_runs,
    sweep_markdown,
    sweep_points,
)
from coin_lightning.eval.plots import comparison_figure, save_png, sweep_figure
from coin_lightning.io import write_json, write_text


def _count(text: str) -> int:
    """An integer >= 0 (argparse type of ``--bootstrap``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} replicates: give 0 (no intervals) or more")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m coin_lightning.compare", description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", help="evaluation run directories (two or more); the first is the baseline")
    p.add_argument("--names", nargs="+", help="a label per run (default: adapter or model name)")
    p.add_argument("--sweep", metavar="DIR", help="a Hydra multirun directory of evaluations to plot against the swept value")
    p.add_argument("--param", help="the swept override key (default: the only one that varies)")
    p.add_argument("--bootstrap", type=_count, default=1000, metavar="B",
                   help="paired bootstrap replicates for 95%% intervals of every delta (rows and instructions resampled); 0 = none")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws")
    p.add_argument("--out", help="output directory (default: outputs/compare/<time>)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; return the exit status (0 ok, 2 bad input)."""
    args = parse_args(take_verbose_flag(sys.argv[1:] if argv is None else list(argv)))
    out = Path(args.out or f"outputs/compare/{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    console = Console()
    try:
        if args.sweep:
            if args.runs:
                raise ComparisonError("give either run directories or --sweep, not both")
            parameter, points = sweep_points(args.sweep, args.param)
            text = sweep_markdown(parameter, points)
            write_text(out / "sweep.md", text)
            write_json(out / "sweep.json", {"parameter": parameter, "points": [
                {"value": v, "job": str(j), "per_level": m["per_level"], "overall": m["overall"]} for v, m, j in points]})
            save_png(sweep_figure(parameter, [(v, m) for v, m, _ in points]), out / "sweep.png")
        else:
            cmp = compare_runs(args.runs, args.names, bootstrap=args.bootstrap, seed=args.seed)
            text = comparison_markdown(cmp)
            write_text(out / "comparison.md", text)
            write_json(out / "comparison.json", cmp)
            save_png(comparison_figure(cmp["names"], load_runs(args.runs)), out / "comparison.png")
    except Exception as exc:
        return print_user_error(exc)
    console.print(Markdown(text))
    console.print(f"[bold]Outputs:[/bold] {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
