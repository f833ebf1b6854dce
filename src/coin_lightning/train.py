"""``python -m coin_lightning.train``: Contrastive Instruction Tuning with Hydra configs from ``conf/``.

Examples::

    python -m coin_lightning.train                                  # embedded model + data, CPU
    python -m coin_lightning.train model=alpaca trainer=gpu experiment=coin_alpaca
    python -m coin_lightning.train -m loss.lambda=0,100,1000 seed=1,2,3   # one job (and dir) each
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from coin_lightning.conf import CONFIG_DIR


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point: runs one job and returns its final ``val/loss`` (for sweepers)."""
    from coin_lightning.training.run import train

    summary = train(cfg)
    return summary["metrics"].get("val/loss")


if __name__ == "__main__":
    main()
