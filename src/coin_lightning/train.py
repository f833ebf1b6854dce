"""``coin-train`` (or ``python -m coin_lightning.train``): Contrastive Instruction Tuning with Hydra configs from ``conf/``.

Examples::

    coin-train                                  # embedded model + data, CPU
    coin-train trainer=gpu experiment=coin_alpaca data.path=/path/to/coin.csv   # the paper (LLaMA-7B + alpaca-lora)
    coin-train -m loss.lambda=0,100,1000 seed=1,2,3   # one job (and dir) each
    coin-train -m loss.lambda=0,1000 seed=1,2,3 eval_after_train=true \
        evaluation.eval.tasks=[sst2,rte] data=glue data.root=../shared/data/glue   # then: compare --sweep DIR
    coin-train --verbose ...                    # full tracebacks (or HYDRA_FULL_ERROR=1)

Bad input stops the job with ``error: <one line>`` naming the key, file or row, before any model loads
where the input can be checked without one.
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from coin_lightning.commands import hydra_command
from coin_lightning.conf import CONFIG_DIR, train_run, training_eval_job  # registers the config schemas
from coin_lightning.errors import reported


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point: runs one job and returns its final ``val/loss`` (for sweepers).

    With ``eval_after_train=true`` the evaluation settings are checked before training and the adapter
    is evaluated when fit ends (:mod:`coin_lightning.after_train`).
    """
    from coin_lightning.training.checks import check_train_config

    with reported(cfg.output_dir):
        run = train_run(cfg)
        check_train_config(run)  # before any model loads: config errors fail in seconds
        job = training_eval_job(cfg) if cfg.get("eval_after_train") else None
        if job is not None:
            from coin_lightning.after_train import check_evaluation, evaluate_after_fit

            check_evaluation(job)
    from coin_lightning.training.run import train

    after_fit = evaluate_after_fit(job, str(cfg.callbacks.adapter.dirpath)) if job is not None else None
    return train(run, after_fit=after_fit, checked=True)["metrics"].get("val/loss")


def cli() -> None:
    """The console script ``coin-train`` (also ``python -m coin_lightning.train``): third-party noise filtered,
    ``--verbose`` for full tracebacks (also ``HYDRA_FULL_ERROR=1``), composition errors in one line."""
    hydra_command(main)


if __name__ == "__main__":
    cli()
