"""``python -m coin_lightning.evaluate``: robustness of a model (optionally with an adapter) to instructions.

Examples::

    python -m coin_lightning.evaluate data.root=../shared/data/glue                  # base model
    python -m coin_lightning.evaluate adapter=outputs/train/runs/<time>/adapter data.root=../shared/data/glue
    python -m coin_lightning.evaluate eval.instructions_file=prompts.yaml eval.method=rank
    python -m coin_lightning.evaluate -m eval.perturb.character.max_words=1,2,4     # then: compare --sweep DIR
    python -m coin_lightning.evaluate model=alpaca trainer=ddp trainer.devices=8 adapter=...   # 8 GPUs share the rows
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from coin_lightning.conf import CONFIG_DIR  # registers the config schemas
from coin_lightning.errors import (
    run_hydra,  # imports coin_lightning.outputs before Hydra runs: it records which job directories exist
)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point: runs one evaluation and returns its mean perturbed accuracy (for sweepers)."""
    from coin_lightning.eval.cli import evaluate
    from coin_lightning.eval.engine.distributed import sigterm_as_interrupt

    with sigterm_as_interrupt():  # SIGTERM (SLURM preemption, kill) stops it as Ctrl-C does
        return evaluate(cfg)["overall"]["perturbed"]


if __name__ == "__main__":
    run_hydra(main)  # --verbose: full tracebacks (also HYDRA_FULL_ERROR=1); composition errors in one line
