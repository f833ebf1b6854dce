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

import coin_lightning.outputs  # noqa: F401  (imported before Hydra runs: records which job directories exist)
from coin_lightning.conf import CONFIG_DIR
from coin_lightning.errors import take_verbose_flag


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point: runs one evaluation and returns its mean perturbed accuracy (for sweepers)."""
    from coin_lightning.eval.cli import evaluate
    from coin_lightning.eval.engine.distributed import sigterm_as_interrupt

    with sigterm_as_interrupt():  # SIGTERM (SLURM preemption, kill) stops it as Ctrl-C does
        return evaluate(cfg)["overall"]["perturbed"]


if __name__ == "__main__":
    take_verbose_flag()  # --verbose: full tracebacks (also HYDRA_FULL_ERROR=1)
    main()
