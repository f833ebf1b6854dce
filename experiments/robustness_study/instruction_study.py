"""``python -m experiments.robustness_study.instruction_study``: does CoIN make the model more robust in a
regime where the instruction carries the task? (``instruction_study.yaml``; README.md, "The instruction regime")

Stages (each job one command of the package, resumable and committed as it ends with ``--commit``,
through :class:`experiments.robustness_study.jobs.Jobs`):

1. **regime**: ``train.csv`` and the two task files (:mod:`experiments.robustness_study.instruction_regime`)
   in ``<work>/regime``;
2. **pilot**: continual tuning (lambda=0, seed 1) under each setting of ``pilots``; its drop from clean
   and off-label rate decide whether the regime passes the gate;
3. **sweep**: every arm x seed, seed by seed (a stopped run leaves the arms evenly trained), each
   evaluating its own adapter (``eval_after_train``); the pilot job of ``setting`` is the continual arm's
   seed-1 job when its command is the same (compared with the paths portable, so a pilot restored from
   records of another checkout and work directory counts), unless the job's own record restores it;
4. **compare**: ``compare --sweep`` (paired and independent-seed intervals), then ``summary.json`` and
   ``drop_by_level.png`` in ``results/instruction_regime`` (:mod:`experiments.robustness_study.instruction_summary`).

Examples::

    python -m experiments.robustness_study.instruction_study --commit
    python -m experiments.robustness_study.instruction_study --commit --arms continual coin_last  # one of two runners
    python -m experiments.robustness_study.instruction_study --stop-after pilot --set 'pilots.steps150=[trainer.max_steps=150]'
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path

from omegaconf import OmegaConf

from experiments.robustness_study.instruction_regime import TASKS, write_regime
from experiments.robustness_study.instruction_summary import write_summary
from experiments.robustness_study.jobs import DONE, REPO, Jobs
from experiments.robustness_study.stages import PY

HERE = REPO / "experiments" / "robustness_study"


def _list(xs) -> str:
    return "[" + ",".join(str(x) for x in xs) + "]"


def settings(cmd: list) -> dict:
    """The overrides of a training command that name what it trains (``loss.*``, ``seed``, ``trainer.*``,
    ``optimizer.*``), as ``{key: value}``: two runs of one job must agree on them."""
    pairs = (str(c).strip("'").split("=", 1) for c in cmd if "=" in str(c))
    return {k: v for k, v in pairs if k.split(".")[0] in ("loss", "seed", "trainer", "optimizer")}


class InstructionStudy:
    """The jobs of one run of the instruction-regime study (see the module docstring)."""

    def __init__(self, cfg, work: Path, results: Path, commit: bool):
        """
        Raises:
            SystemExit: one line naming the config key at fault (a missing sst2 split, an unknown ``setting``)
                before any job runs.
        """
        self.cfg, self.work, self.results = cfg, work, results
        glue = (REPO / cfg.data / "glue").resolve()
        if not (glue / "sst2" / "train.jsonl").is_file():
            raise SystemExit(f"error: instruction_study.yaml data: {glue}/sst2/train.jsonl not found")
        if cfg.setting not in cfg.pilots:
            raise SystemExit(f"error: instruction_study.yaml setting: {cfg.setting!r} is not one of pilots: {list(cfg.pilots)}")
        self.regime = write_regime(glue, work / "regime", int(cfg.regime.groups), int(cfg.regime.seed))
        self.jobs = Jobs(REPO, results, commit, program="experiments.robustness_study.instruction_study", work=work)

    def command(self, job: Path, extra: list, lam, pooling: str, seed: int) -> list:
        """One training job: the ``train`` overrides and ``extra``, lambda, pooling and seed, evaluating its
        adapter at the end on the regime's task files."""
        e = "evaluation.eval"
        return [PY, "-m", "coin_lightning.train", f"model={self.cfg.model}", *self.cfg.train, *extra,
                f"data.path={self.regime['train_csv']}", f"loss.lambda={lam}", f"loss.pooling={pooling}", f"seed={seed}",
                "eval_after_train=true", f"{e}.tasks={_list(TASKS)}", f"{e}.task_files={_list(self.regime['task_files'])}",
                f"{e}.samples_per_task={self.cfg.eval.rows_per_task}", f"{e}.method={self.cfg.eval.method}",
                f"{e}.levels={_list(self.cfg.eval.levels)}", f"hydra.run.dir={job}"]

    def train(self, group: str, name: str, cmd: list, labels: dict) -> dict:
        """Run (or restore, or skip) one job and collect its small outputs; return its marker.

        Raises:
            SystemExit: the job finished earlier with other settings (:func:`settings`), e.g. another lambda.
        """
        job = self.work / group / name
        if not self.jobs.restore(group, name, job, job / "eval") and group == "sweep":
            self.reuse_pilot(job, cmd)  # its own record first, then the pilot's job if it ran the same command
        if (job / DONE).is_file():
            ran = settings(json.loads((job / DONE).read_text(encoding="utf-8"))["command"].split())
            if ran != settings(cmd):
                raise SystemExit(f"error: {job}/{DONE}: the job ran with {ran}, not {settings(cmd)}; "
                                 f"move it (and {self.results}/jobs/{group}/{name}) aside to rerun it")
        done = self.jobs.run(group, job, cmd, done_when=job / "eval" / "metrics.json", fresh=True)
        self.jobs.collect(group, name, job, job / "eval", done, labels)
        return done

    def pilots(self) -> None:
        """Continual tuning, seed 1, under every pilot setting."""
        for name, extra in self.cfg.pilots.items():
            job = self.work / "pilot" / name
            self.train("pilot", name, self.command(job, list(extra), 0, "last", 1), {"setting": name, "overrides": list(extra)})

    def sweep(self, arms: list | None = None) -> Path:
        """Every arm (of ``arms``, default all) x seed under ``setting``, seed by seed; returns the sweep directory.

        Raises:
            SystemExit: an arm of ``arms`` is not in the config.
        """
        extra = list(self.cfg.pilots[self.cfg.setting])
        unknown = sorted(set(arms or []) - set(self.cfg.arms))
        if unknown:
            raise SystemExit(f"error: --arms {' '.join(unknown)}: not in instruction_study.yaml arms: {list(self.cfg.arms)}")
        for seed in self.cfg.seeds:
            for arm, a in self.cfg.arms.items():
                if arms and arm not in arms:
                    continue
                job = self.work / "sweep" / f"{arm}_seed{seed}"
                cmd = self.command(job, extra, a["lambda"], a.pooling, seed)
                self.train("sweep", job.name, cmd, {"arm": arm, "lambda": a["lambda"], "pooling": a.pooling, "seed": seed})
        return self.work / "sweep"

    def reuse_pilot(self, job: Path, cmd: list) -> None:
        """Copy the pilot job of ``setting`` when it ran exactly ``cmd`` (the continual arm, seed 1; the commands
        compared in their portable form, :meth:`Jobs.portable`, so a pilot restored from records written on
        another checkout and work directory counts)."""
        pilot = self.work / "pilot" / str(self.cfg.setting)
        if (job / DONE).is_file() or not (pilot / DONE).is_file():
            return
        done = json.loads((pilot / DONE).read_text(encoding="utf-8"))
        same = self.jobs.portable(" ".join(shlex.quote(str(c)) for c in cmd).replace(str(job), str(pilot)))
        if self.jobs.portable(done["command"]) == same:
            shutil.rmtree(job, ignore_errors=True)
            shutil.copytree(pilot, job)
            (job / DONE).write_text(json.dumps({**done, "reused_from": f"pilot/{self.cfg.setting}"}), encoding="utf-8")

    def compare(self, sweep: Path) -> Path:
        """``compare --sweep`` with the first arm as the reference, into ``<work>/compare``."""
        first = next(iter(self.cfg.arms.values()))
        reference = f"loss.lambda={first['lambda']},loss.pooling={first.pooling}"  # as compare names the arm
        out = self.work / "compare"
        (out / DONE).unlink(missing_ok=True)  # cheap: always recomputed from the jobs
        cmd = [PY, "-m", "coin_lightning.compare", "--sweep", str(sweep), "--reference", reference,
               "--bootstrap", str(self.cfg.bootstrap), "--out", str(out)]
        self.jobs.run("compare", out, cmd, done_when=out / "comparison.json")
        return out


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) every stage; return 0 (a failing job exits with its message)."""
    p = argparse.ArgumentParser(prog="python -m experiments.robustness_study.instruction_study",
                                description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(HERE / "instruction_study.yaml"))
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys, e.g. seeds=[1,2]")
    p.add_argument("--work", default="outputs/instruction_study", help="job directories (resumable)")
    p.add_argument("--results", default=str(HERE / "results" / "instruction_regime"), help="small outputs (committed)")
    p.add_argument("--commit", action="store_true", help="git-commit each finished job's small outputs")
    p.add_argument("--stop-after", choices=("pilot", "sweep"), help="stop after the pilots, or after the sweep's jobs")
    p.add_argument("--arms", nargs="*", help="run only these arms' jobs (implies --stop-after sweep), e.g. to run two "
                   "runners side by side")
    args = p.parse_args(argv)
    cfg = OmegaConf.merge(OmegaConf.load(args.config), OmegaConf.from_dotlist(args.set))
    results = Path(args.results).resolve()
    results.mkdir(parents=True, exist_ok=True)
    study = InstructionStudy(cfg, Path(args.work).resolve(), results, args.commit)
    study.pilots()
    if args.stop_after != "pilot":
        sweep = study.sweep(args.arms)
    if args.stop_after is None and not args.arms:
        out = study.compare(sweep)
        summary = write_summary(cfg, out, results, study.work)
        study.jobs.commit_paths([results / f for f in ("summary.json", "comparison.md", "comparison.json", "drop_by_level.png")],
                                "robustness study: instruction regime, comparison and summary")
        print(f"[instruction_study] gate passed: {summary['gate']['passed']}; results in {results}", flush=True)
    study.jobs.write_log()
    study.jobs.commit_paths([results / "commands.sh", results / "stages.json"], "robustness study: instruction regime commands")
    return 0


if __name__ == "__main__":
    sys.exit(main())
