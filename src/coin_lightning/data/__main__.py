"""Inspect the data: ``python -m coin_lightning.data show [--n N] [--tokenize] [overrides...]``.

Composes ``conf/train.yaml`` (its ``data`` group and ``seed``) with the given Hydra overrides, e.g.
``python -m coin_lightning.data show data=glue data.root=../shared/data/glue
data.templates=../shared/data/flan/templates.json``, builds the DataModule and prints per-task counts,
the data statistics and ``N`` rendered groups (originals, paraphrases, hard negatives) with their
prompts exactly as the model sees them. ``--tokenize`` loads the ``model`` group's tokenizer
(``coin_lightning.model.loading.load_tokenizer``) and adds token counts and truncation statistics.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from coin_lightning.errors import ConfigError, reported, take_verbose_flag


def compose(overrides: list[str], config_dir: Path | None = None, config_name: str = "train"):
    """Compose ``<config_dir>/<config_name>.yaml`` with overrides (no Hydra run directory).

    Raises:
        ConfigError: the config file does not exist.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from coin_lightning.conf import CONFIG_DIR  # registers the config schemas the YAML files start from

    config_dir = Path(config_dir or CONFIG_DIR)
    if not (config_dir / f"{config_name}.yaml").is_file():
        raise ConfigError(f"{config_dir / config_name}.yaml not found; pass --config-dir")
    with initialize_config_dir(config_dir=str(config_dir.resolve()), version_base=None):
        return hydra_compose(config_name=config_name, overrides=overrides)


def show(cfg, n: int = 3, tokenize: bool = False, console=None):
    """Build the DataModule of ``cfg.data`` and print counts, stats and ``n`` rendered groups.

    Returns:
        The set-up DataModule.
    """
    from rich.console import Console
    from rich.table import Table

    from coin_lightning.data.config import DataArgs
    from coin_lightning.data.datamodule import CoinDataModule
    from coin_lightning.data.records import build_prompt

    console = console or Console()
    tokenizer = None
    if tokenize:
        from coin_lightning.model.loading import load_tokenizer

        tokenizer = load_tokenizer(cfg.model)
    dm = CoinDataModule(DataArgs.from_config(cfg.data), tokenizer=tokenizer, seed=int(cfg.get("seed", 0)))
    dm.setup("fit")
    st = dm.stats

    table = Table(title=f"data.source={dm.source}  templates={st['templates']}  group={dm.group}")
    for col in ("task", "records", "train records", "train groups"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for task, n_rec in st["records_per_task"].items():
        table.add_row(task, str(n_rec), str(st["train_records_per_task"].get(task, 0)), str(st.get("groups_per_task", {}).get(task, 0)))
    table.add_row("total", str(sum(st["records_per_task"].values())), str(sum(st["train_records_per_task"].values())), str(st["train_groups"]), style="bold")
    console.print(table)
    other = {k: v for k, v in st.items() if k not in ("records_per_task", "train_records_per_task", "groups_per_task")}
    console.print(other)

    ds = dm.train_dataset
    for i in range(min(n, len(ds))):
        group = ds.groups[i]
        rows = ds.encoded[i].rows if ds.encoded is not None else [None] * len(group.examples)  # collation order
        k = len(group.pairs)
        shown = []  # (label, example, encoded row), pair by pair
        for j, pair in enumerate(group.pairs):
            tag = "anchor pair" if j == 0 else "hard-negative pair"
            shown += [(f"{tag}: original", pair.original, rows[j]), (f"{tag}: paraphrase", pair.paraphrase, rows[k + j])]
        shown += [("hard negative (extra column)", neg, rows[2 * k + j]) for j, neg in enumerate(group.negatives)]
        console.rule(f"group {i} ({k} pair(s), {len(group.negatives)} extra negative(s))")
        for label, ex, row in shown:
            tokens = f"  tokens={len(row.ids)} (prompt {row.n_prompt})" if row is not None else ""
            console.print(f"[bold]{label}[/bold]  uid={ex.uid}  template={ex.template}{tokens}", highlight=False)
            console.print(build_prompt(ex.input, dm.prompt_format, tokenizer) + ex.target, markup=False, highlight=False, soft_wrap=True)
            console.print()
    return dm


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns 0 (bad input: ``SystemExit`` 2 after a one-line ``error:``)."""
    parser = argparse.ArgumentParser(prog="python -m coin_lightning.data", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["show"])
    parser.add_argument("--n", type=int, default=3, help="rendered groups to print (default 3)")
    parser.add_argument("--tokenize", action="store_true", help="load the model's tokenizer; show token counts")
    parser.add_argument("--config-dir", type=Path, default=None, help="Hydra config directory (default: the repository's conf/)")
    parser.add_argument("--config-name", default="train", help="primary config (default train)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=glue data.root=../shared/data/glue")
    args = parser.parse_intermixed_args(take_verbose_flag(sys.argv[1:] if argv is None else list(argv)))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with reported(status=2):
        cfg = compose(args.overrides, args.config_dir, args.config_name)
        show(cfg, args.n, args.tokenize)
    return 0


if __name__ == "__main__":
    sys.exit(main())
