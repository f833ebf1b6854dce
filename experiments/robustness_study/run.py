"""``make robustness-study`` / ``python -m experiments.robustness_study.run``: does CoIN make the model
more robust? Continual instruction tuning (lambda=0) against CoIN over several training seeds, on the
project's seeded perturbations and on instructions found by attacking a model in neither arm.

Stages (each job one command of the package, run as a subprocess, logged to ``commands.sh``; sizes in
``study.yaml``):

1. **pilot**: every arm x ``pilot.seeds`` trained with ``eval_after_train`` on the candidate tasks;
2. **power** (in-process, :mod:`experiments.robustness_study.power`): keep the tasks every arm learns
   above the majority-class rate, then the seeds and rows per task for a 95% interval of CoIN minus
   continual (perturbed accuracy) of at most ``power.half_width_points``;
3. **attack**: a model in neither arm (``attack.target``: the base model, or an adapter trained with
   other templates), attacked once with ``eval.perturb_mode=adversarial`` at every level; the
   instructions found go to ``results/attacked_instructions.yaml``, its settings and the accuracy drop on
   the attacked model to ``results/attack.json``;
4. **sweep**: every arm x seeds, ``eval_after_train`` on the default (seeded) instruction set;
5. **views**: each sweep adapter evaluated again with the attacked file and the secondary method (then
   the sweep job's small outputs are collected), and with ``--instructions-file``; each view is laid
   out as a sweep (the training job's overrides, the evaluation in ``eval/``);
6. **compare**: ``compare --sweep`` of the sweep and every view; ``results/summary.json``.

Every job leaves ``done.json`` (its commit, command, wall time) and is skipped on rerun
(:mod:`experiments.robustness_study.jobs`); its small outputs go to ``results/jobs/`` as it finishes
(``--commit``: committed with git, with ``power.json`` and the attack's files), naming no path of this
machine (``<work>/...`` for the work directory, other paths relative to the repository root:
:func:`experiments.robustness_study.jobs.portable`). Work files go to
``--work`` (default ``outputs/robustness_study``). From a clean checkout (no work directory) a job
whose small outputs are in ``results/jobs/`` is restored from there and not re-run; a sweep job gets
there only once the attacked and secondary views have evaluated its adapter, as adapters are not
committed: a later view (``--instructions-file``, another secondary method) needs the ``--work`` that trained
them or ``--retrain-adapters``, which re-trains each missing adapter with its job's command (and seed) and
stops unless its final validation loss matches the recorded one (``stages.RETRAIN_VAL_LOSS_ATOL``).

Examples::

    make robustness-study
    python -m experiments.robustness_study.run --commit                 # commit each finished job
    python -m experiments.robustness_study.run --instructions-file published.yaml   # another set, same adapters
    python -m experiments.robustness_study.run --commit --stop-after attack     # freeze the attacked set now
    python -m experiments.robustness_study.run --commit --retrain-adapters   # a new view from a clean checkout
    python -m experiments.robustness_study.run --smoke --work /tmp/s --results /tmp/s/results
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from experiments.robustness_study.stages import REPO, Study
from experiments.robustness_study.summary import write_summary

HERE = REPO / "experiments" / "robustness_study"
STAGES = ("pilot", "power", "attack")
"""Stages ``--stop-after`` accepts (in order); the sweep, the views and compare follow."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m experiments.robustness_study.run", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(HERE / "study.yaml"), help="the study's sizes")
    p.add_argument("--smoke", action="store_true", help="the config's smoke: sizes (tiny random LLaMA, about a minute)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys, e.g. sweep.seeds=5")
    p.add_argument("--instructions-file", help="also evaluate every sweep adapter on this {perturbation: {task: [...]}} file")
    p.add_argument("--work", default="outputs/robustness_study", help="job directories (resumable)")
    p.add_argument("--results", default=str(HERE / "results"), help="small outputs (committed)")
    p.add_argument("--commit", action="store_true", help="git-commit each finished job's small outputs")
    p.add_argument("--retrain-adapters", action="store_true",
                   help="a view that needs an adapter the work directory lacks (its sweep job restored from the results) "
                        "re-trains it with the job's command and checks the recorded validation loss")
    p.add_argument("--stop-after", choices=STAGES, help="stop after this stage (e.g. attack: freeze the attacked set "
                                                          "now, evaluate it later); commands.sh and stages.json are written")
    return p.parse_args(argv)


def load_config(path: str, smoke: bool, sets: list[str]) -> DictConfig:
    """``study.yaml``, with its ``smoke`` section merged when ``smoke``, then ``--set`` overrides.

    Raises:
        SystemExit: one line naming a key the config does not have (a new arm under ``arms`` is allowed).
    """
    from omegaconf.errors import OmegaConfBaseException

    cfg = OmegaConf.load(path)
    small = cfg.pop("smoke", None)
    try:
        OmegaConf.set_struct(cfg, True)  # the smoke section and --set may only change keys the config has
        if smoke and small is not None:
            cfg = OmegaConf.merge(cfg, small)
        with open_dict(cfg.arms):  # arms may be added
            return OmegaConf.merge(cfg, OmegaConf.from_dotlist(sets))
    except OmegaConfBaseException as exc:
        first = str(exc).strip().splitlines()[0]
        key = getattr(exc, "full_key", None)
        raise SystemExit(f"error: {path}: {key + ': ' if key else ''}{first} (--set takes keys of the study config)") from None


def _sizes(cfg: DictConfig, power: dict) -> tuple[list[int], int]:
    seeds, rows = cfg.sweep.seeds, cfg.sweep.rows_per_task
    seeds = power["chosen"]["seeds"] if seeds == "pilot" else seeds
    seeds = list(range(1, int(seeds) + 1)) if isinstance(seeds, int) else list(seeds)
    # at least the pilot's rows, so that the pilot's jobs (the same command) count as sweep jobs
    rows = max(power["chosen"]["rows_per_task"], int(cfg.pilot.rows_per_task)) if rows == "pilot" else int(rows)
    return seeds, rows


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) every stage; return 0 (a failing job exits with its message)."""
    args = parse_args(argv)
    cfg = load_config(args.config, args.smoke, args.set)
    if len(cfg.arms) < 2:
        raise SystemExit("error: study.yaml arms: at least two (the first is the reference)")
    extra_file = Path(args.instructions_file).resolve() if args.instructions_file else None
    if extra_file is not None and not extra_file.is_file():
        raise SystemExit(f"error: --instructions-file {extra_file} not found")
    work, results = Path(args.work).resolve(), Path(args.results).resolve()
    results.mkdir(parents=True, exist_ok=True)
    study = Study(cfg, work, results, args.commit, args.retrain_adapters)
    t0 = time.perf_counter()

    def stop(stage: str) -> bool:
        if args.stop_after != stage:
            return False
        study.jobs.write_log()
        print(f"[robustness_study] stopped after {stage} in {time.perf_counter() - t0:.0f} s", flush=True)
        return True

    study.train_jobs("pilot", list(cfg.pilot.seeds), list(cfg.tasks), int(cfg.pilot.rows_per_task))
    if stop("pilot"):
        return 0
    power = study.power()
    tasks = power["tasks"]["kept"]
    if stop("power"):
        return 0
    attacked = study.attack(tasks) if cfg.attack else None  # attack: null skips the attack and its view
    if stop("attack"):
        return 0
    seeds, rows = _sizes(cfg, power)
    sweep = study.train_jobs("sweep", seeds, tasks, rows, collect=False)
    views = {"default": work / "sweep"}  # the views every sweep job needs before it counts as finished
    if attacked is not None:
        views["attacked"] = study.view_jobs("attacked", sweep, tasks, rows, [f"eval.instructions_file={attacked}"])
    if cfg.get("secondary_method"):
        n = cfg.get("secondary_seeds") or len(seeds)  # the first n seeds of each arm
        views[str(cfg.secondary_method)] = study.view_jobs(str(cfg.secondary_method),
                                                           [j for j in sweep if j[2]["seed"] in seeds[:n]], tasks, rows,
                                                           [], method=str(cfg.secondary_method))
    study.collect_sweep(sweep, [v for v in views if v != "default"])
    if extra_file is not None:  # needs the adapters (the --work that trained them) unless already in the results
        name = f"file_{extra_file.stem}"
        views[name] = study.view_jobs(name, sweep, tasks, rows, [f"eval.instructions_file={extra_file}"])
        for job, _, _ in sweep:
            study.jobs.collect(f"views/{name}", job.name, work / "views" / name / job.name,
                               work / "views" / name / job.name / "eval", study.view_done[name][job.name])
    compared = {name: study.compare(name, d) for name, d in views.items()}
    study.jobs.write_log()
    write_summary(cfg, compared, results, power, study.arms, seeds, rows, work)
    print(f"[robustness_study] done in {time.perf_counter() - t0:.0f} s; results in {results}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
