"""``coin-evaluate`` (or ``python -m coin_lightning.evaluate``): robustness of a model (optionally with an adapter) to instructions.

Examples::

    coin-evaluate data.root=../shared/data/glue                  # base model
    coin-evaluate adapter=outputs/train/runs/<time>/adapter data.root=../shared/data/glue
    coin-evaluate eval.instructions_file=prompts.yaml eval.method=rank
    coin-evaluate -m eval.perturb.character.max_words=1,2,4     # then: compare --sweep DIR
    coin-evaluate model=alpaca trainer=ddp trainer.devices=8 adapter=...   # 8 GPUs share the rows
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from coin_lightning.commands import hydra_command
from coin_lightning.conf import CONFIG_DIR, eval_job  # registers the config schemas
from coin_lightning.errors import reported


def run(cfg: DictConfig) -> dict:
    """Parse a composed ``eval.yaml`` into its typed job (:func:`coin_lightning.conf.eval_job`) and run it
    (:func:`coin_lightning.eval.cli.evaluate`); returns the metrics.

    Raises:
        SystemExit: ``error: <one line>`` for a bad config or input, before any model loads.
    """
    from coin_lightning.eval.cli import evaluate

    with reported(cfg.output_dir):
        job = eval_job(cfg)
    return evaluate(job)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point: runs one evaluation and returns its mean perturbed accuracy (for sweepers)."""
    from coin_lightning.eval.engine.distributed import sigterm_as_interrupt

    with sigterm_as_interrupt():  # SIGTERM (SLURM preemption, kill) stops it as Ctrl-C does
        return run(cfg)["overall"]["perturbed"]


def cli() -> None:
    """The console script ``coin-evaluate`` (also ``python -m coin_lightning.evaluate``): third-party noise filtered,
    ``--verbose`` for full tracebacks (also ``HYDRA_FULL_ERROR=1``), composition errors in one line."""
    hydra_command(main)


if __name__ == "__main__":
    cli()
