"""``coin-analyze`` (or ``python -m coin_lightning.analyze``): representations of the same inputs under clean and perturbed
instructions (CoIN paper, Sec. 5): a 2-D projection (UMAP or PCA) and their mean cosine similarity.

Examples::

    coin-analyze data.root=../shared/data/glue eval.tasks=[rte,sst2]
    coin-analyze adapter=outputs/train/runs/<time>/adapter analyze.projection=pca
    coin-analyze model=alpaca trainer=gpu adapter=...          # on one GPU (bf16-mixed)
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from coin_lightning.commands import hydra_command
from coin_lightning.conf import CONFIG_DIR, eval_job  # registers the config schemas
from coin_lightning.errors import reported


def run(cfg: DictConfig) -> dict:
    """Parse a composed ``analyze.yaml`` into its typed job (:func:`coin_lightning.conf.eval_job`) and run the
    analysis (:func:`coin_lightning.eval.cli.analyze`); returns the similarity summary.

    Raises:
        SystemExit: ``error: <one line>`` for a bad config or input, before any model loads.
    """
    from coin_lightning.eval.cli import analyze

    with reported(cfg.output_dir):
        job = eval_job(cfg)
    return analyze(job)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="analyze")
def main(cfg: DictConfig) -> float:
    """Hydra entry point: returns the overall mean cosine similarity (clean vs perturbed)."""
    from coin_lightning.eval.engine.distributed import sigterm_as_interrupt

    with sigterm_as_interrupt():  # SIGTERM (SLURM preemption, kill) stops it as Ctrl-C does
        return run(cfg)["overall"]


def cli() -> None:
    """The console script ``coin-analyze`` (also ``python -m coin_lightning.analyze``): third-party noise filtered,
    ``--verbose`` for full tracebacks (also ``HYDRA_FULL_ERROR=1``), composition errors in one line."""
    hydra_command(main)


if __name__ == "__main__":
    cli()
