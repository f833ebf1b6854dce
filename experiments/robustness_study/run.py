"""``make robustness-study`` / ``python -m experiments.robustness_study.run``: does CoIN make the model
more robust? Continual instruction tuning (lambda=0) against CoIN over several training seeds, on the
project's seeded perturbations and on instructions found by attacking the base model.

Stages (each job one command of the package, run as a subprocess, logged to ``commands.sh``; sizes in
``study.yaml``):

1. **pilot**: every arm x ``pilot.seeds`` trained with ``eval_after_train`` on the candidate tasks;
2. **power** (in-process, :mod:`experiments.robustness_study.power`): keep the tasks every arm learns
   above the majority-class rate, then the seeds and rows per task for a 95% interval of CoIN minus
   continual (perturbed accuracy) of at most ``power.half_width_points``;
3. **attack**: the base model (in neither arm), attacked once with ``eval.perturb_mode=adversarial`` at
   every level; the instructions found go to ``results/attacked_instructions.yaml``, its settings and the
   accuracy drop on the base model to ``results/attack.json``;
4. **sweep**: every arm x seeds, ``eval_after_train`` on the default (seeded) instruction set;
5. **views**: each sweep adapter evaluated again with the attacked file (and ``--instructions-file``,
   and the secondary method); each view is laid out as a sweep (the training job's overrides,
   the evaluation in ``eval/``);
6. **compare**: ``compare --sweep`` of the sweep and every view; ``results/summary.json``.

Every job leaves ``done.json`` (its commit, command, wall time) and is skipped on rerun
(:mod:`experiments.robustness_study.jobs`); its small outputs go to ``results/jobs/`` as it finishes
(``--commit``: committed with git). Work files go to ``--work`` (default ``outputs/robustness_study``).

Examples::

    make robustness-study
    python -m experiments.robustness_study.run --commit                 # commit each finished job
    python -m experiments.robustness_study.run --instructions-file published.yaml   # another set, same adapters
    python -m experiments.robustness_study.run --smoke --work /tmp/s --results /tmp/s/results
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from coin_lightning.eval.bootstrap import read_predictions
from coin_lightning.io import write_json
from experiments.robustness_study.jobs import DONE, Jobs
from experiments.robustness_study.power import majority_rate, paired_differences, plan, task_floor, variance_components
from experiments.robustness_study.summary import write_summary

REPO = Path(__file__).resolve().parents[2]
HERE = REPO / "experiments" / "robustness_study"
PY = sys.executable


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


def _list(xs) -> str:
    return "[" + ",".join(str(x) for x in xs) + "]"


def eval_overrides(cfg: DictConfig, prefix: str, tasks: list[str], rows: int, method: str | None = None) -> list[str]:
    """The evaluation settings of the study as overrides of ``<prefix>.*`` (``eval`` or ``evaluation.eval``)."""
    return [f"{prefix}.tasks={_list(tasks)}", f"{prefix}.samples_per_task={rows}",
            f"{prefix}.method={method or cfg.eval.method}", f"{prefix}.levels={_list(cfg.eval.levels)}"]


class Study:
    """The stages of one study run (see the module docstring)."""

    def __init__(self, cfg: DictConfig, work: Path, results: Path, commit: bool):
        self.cfg, self.work, self.results = cfg, work, results
        self.jobs = Jobs(REPO, results, commit)
        self.glue = (REPO / cfg.data / "glue").resolve()
        if not self.glue.is_dir():
            raise SystemExit(f"error: {self.glue} not found (study.yaml data: must hold glue/<task>/<split>.jsonl)")
        self.arms = dict(cfg.arms)

    def train_jobs(self, group: str, seeds: list[int], tasks: list[str], rows: int) -> list[Path]:
        """Train (and evaluate) every arm x seed into ``<work>/<group>/<arm>_seed<k>``."""
        dirs = []
        for arm, lam in self.arms.items():
            for seed in seeds:
                job = self.work / group / f"{arm}_seed{seed}"
                cmd = [PY, "-m", "coin_lightning.train", f"model={self.cfg.model}", *self.cfg.train,
                       f"data.root={self.glue}", f"data.tasks={_list(tasks)}", f"loss.lambda={lam}", f"seed={seed}",
                       "eval_after_train=true", *eval_overrides(self.cfg, "evaluation.eval", tasks, rows),
                       f"hydra.run.dir={job}"]
                if group != "pilot":
                    self.reuse_pilot(job, cmd)
                done = self.jobs.run(group, job, cmd, done_when=job / "eval" / "metrics.json", fresh=True)
                self.jobs.collect(group, job.name, job / "eval", done, {"arm": arm, "lambda": lam, "seed": seed})
                dirs.append(job)
        return dirs

    def reuse_pilot(self, job: Path, cmd: list) -> None:
        """Copy the pilot's job of the same arm and seed when it ran exactly ``cmd`` (same sizes), so it
        is not trained twice."""
        pilot = self.work / "pilot" / job.name
        marker = pilot / DONE
        if (job / DONE).is_file() or not marker.is_file():
            return
        same = " ".join(shlex.quote(str(c)) for c in cmd).replace(str(job), str(pilot))
        if json.loads(marker.read_text(encoding="utf-8"))["command"] == same:
            shutil.rmtree(job, ignore_errors=True)
            shutil.copytree(pilot, job)
            done = json.loads(marker.read_text(encoding="utf-8"))
            write_json(job / DONE, {**done, "wall_s": 0.0, "command": f"# {job.name}: the pilot's job, the same command",
                                    "reused_from": str(pilot)})

    def view_jobs(self, view: str, jobs: list[Path], tasks: list[str], rows: int, extra: list[str],
                  method: str | None = None) -> Path:
        """Evaluate each sweep adapter again (``extra`` overrides) into ``<work>/views/<view>/<job>/eval``,
        with the training job's overrides beside it, so the view reads as a sweep."""
        root = self.work / "views" / view
        sweep = jobs[0].parent

        def command(pending: list[Path]) -> list:  # one evaluate multirun over the unfinished jobs
            return [PY, "-m", "coin_lightning.evaluate", "-m", f"model={self.cfg.model}",
                    f"+study_job={','.join(p.name for p in pending)}", f"adapter={sweep}/${{study_job}}/adapter",
                    f"data.root={self.glue}", *eval_overrides(self.cfg, "eval", tasks, rows, method), *extra,
                    f"hydra.sweep.dir={root}", "hydra.sweep.subdir=${study_job}/eval"]

        dests = [root / job.name for job in jobs]
        markers = self.jobs.run_many(f"view {view}", dests, lambda pending: command(pending), "eval/metrics.json")
        for job, dest, done in zip(jobs, dests, markers):
            (dest / ".hydra").mkdir(parents=True, exist_ok=True)
            shutil.copy2(job / ".hydra" / "overrides.yaml", dest / ".hydra" / "overrides.yaml")
            self.jobs.collect(f"views/{view}", job.name, dest / "eval", done)
        return root

    def power(self, pilot: list[Path]) -> dict:
        """Tasks kept and the sweep's sizes from the pilot (``results/power.json``)."""
        t0 = time.perf_counter()
        seeds = list(self.cfg.pilot.seeds)
        names = list(self.arms)
        by_arm = {a: [read_predictions(self.work / "pilot" / f"{a}_seed{s}" / "eval") for s in seeds] for a in names}
        clean: dict = {}
        for arm, runs in by_arm.items():
            for rows in runs:
                for task, acc in _clean_accuracy(rows).items():
                    clean.setdefault(task, {}).setdefault(arm, []).append(acc)
        clean = {t: {a: sum(v) / len(v) for a, v in by.items()} for t, by in clean.items()}
        tasks = task_floor(clean, majority_rate(by_arm[names[0]][0]), self.cfg.pilot.margin_points / 100)
        if not tasks["kept"]:
            write_json(self.results / "power.json", {"tasks": tasks})
            raise SystemExit(f"error: the pilot learned no task above chance; see {self.results / 'power.json'}")
        p = self.cfg.power
        keep = set(tasks["kept"])
        plans = {}
        for arm in names[1:]:
            only = lambda runs: [[r for r in rows if r["task"] in keep] for rows in runs]  # noqa: E731
            vc = variance_components(*paired_differences(only(by_arm[arm]), only(by_arm[names[0]])))
            plans[f"{arm} - {names[0]}"] = plan(vc, p.half_width_points / 100, len(keep), p.min_seeds, p.max_seeds,
                                                p.max_rows_per_task, p.confidence)
        chosen = {"seeds": max(x["seeds"] for x in plans.values()),
                  "rows_per_task": max(x["rows_per_task"] for x in plans.values()),
                  "feasible": all(x["feasible"] for x in plans.values())}
        out = {"pilot": {"seeds": seeds, "rows_per_task": self.cfg.pilot.rows_per_task},
               "target_half_width_points": p.half_width_points, "confidence": p.confidence,
               "tasks": tasks, "plans": plans, "chosen": chosen}
        write_json(self.results / "power.json", out)
        self.jobs.walls["power"] = {"wall_s": round(time.perf_counter() - t0, 1), "jobs_run": 1, "jobs_skipped": 0}
        return out

    def attack(self, tasks: list[str]) -> Path:
        """Attack the base model once; copy the instructions found and record settings and drop."""
        a = self.cfg.attack
        job = self.work / "attack"
        settings = {"model": self.cfg.model, "adapter": None, "tasks": tasks, "rows_per_task": a.rows_per_task,
                    "method": self.cfg.eval.method, "levels": list(self.cfg.eval.levels), "query_budget": a.query_budget,
                    "probe_size": a.probe_size, "search": "greedy (coin_lightning.eval.adversarial)"}
        cmd = [PY, "-m", "coin_lightning.evaluate", f"model={self.cfg.model}", f"data.root={self.glue}",
               *eval_overrides(self.cfg, "eval", tasks, a.rows_per_task), "eval.perturb_mode=adversarial",
               f"eval.query_budget={a.query_budget}", f"eval.probe_size={a.probe_size}", f"hydra.run.dir={job / 'eval'}"]
        done = self.jobs.run("attack", job, cmd, done_when=job / "eval" / "adversarial_instructions.yaml")
        found = self.results / "attacked_instructions.yaml"
        shutil.copy2(job / "eval" / "adversarial_instructions.yaml", found)
        m = OmegaConf.to_container(OmegaConf.load(job / "eval" / "metrics.json"))
        per_level = {lv: 100 * v["mean"] for lv, v in m["per_level"].items()}
        write_json(self.results / "attack.json", {
            "settings": settings, "commit": done["commit"], "accuracy_on_base_model": per_level,
            "clean": 100 * m["overall"]["clean"], "perturbed": 100 * m["overall"]["perturbed"],
            "drop_points": 100 * (m["overall"]["clean"] - m["overall"]["perturbed"]),
            "drop_points_per_level": {lv: per_level["clean"] - v for lv, v in per_level.items() if lv != "clean"}})
        self.jobs.collect("attack", "base", job / "eval", done)
        return found

    def compare(self, name: str, sweep_dir: Path) -> Path:
        """``compare --sweep`` of one sweep (or view) into ``<work>/compare/<name>``."""
        out = self.work / "compare" / name
        reference = f"loss.lambda={yaml.safe_load(str(next(iter(self.arms.values()))))}"  # as compare names the arm
        cmd = [PY, "-m", "coin_lightning.compare", "--sweep", str(sweep_dir), "--reference", reference,
               "--bootstrap", str(self.cfg.bootstrap), "--out", str(out)]
        marker, jobs = out / "done.json", list(sweep_dir.glob("*/done.json"))
        if marker.is_file() and any(j.stat().st_mtime > marker.stat().st_mtime for j in jobs):
            marker.unlink()  # a job finished since: compare again
        self.jobs.run("compare", out, cmd, done_when=out / "comparison.json")
        return out


def _clean_accuracy(rows: list[dict]) -> dict[str, float]:
    """Per task, the accuracy under the clean instructions."""
    acc: dict = {}
    for r in rows:
        if r["level"] == "clean":
            acc.setdefault(r["task"], []).append(float(r["pred"] == r["gold"]))
    return {t: sum(v) / len(v) for t, v in acc.items()}


def _sizes(cfg: DictConfig, power: dict) -> tuple[list[int], int]:
    seeds, rows = cfg.sweep.seeds, cfg.sweep.rows_per_task
    seeds = power["chosen"]["seeds"] if seeds == "pilot" else seeds
    seeds = list(range(1, int(seeds) + 1)) if isinstance(seeds, int) else list(seeds)
    rows = power["chosen"]["rows_per_task"] if rows == "pilot" else int(rows)
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
    study = Study(cfg, work, results, args.commit)
    t0 = time.perf_counter()
    pilot = study.train_jobs("pilot", list(cfg.pilot.seeds), list(cfg.tasks), int(cfg.pilot.rows_per_task))
    power = study.power(pilot)
    tasks = power["tasks"]["kept"]
    attacked = study.attack(tasks)
    seeds, rows = _sizes(cfg, power)
    sweep = study.train_jobs("sweep", seeds, tasks, rows)
    views = {"default": work / "sweep",
             "attacked": study.view_jobs("attacked", sweep, tasks, rows, [f"eval.instructions_file={attacked}"])}
    if extra_file is not None:
        views[f"file_{extra_file.stem}"] = study.view_jobs(f"file_{extra_file.stem}", sweep, tasks, rows,
                                                           [f"eval.instructions_file={extra_file}"])
    if cfg.get("secondary_method"):
        views[str(cfg.secondary_method)] = study.view_jobs(str(cfg.secondary_method), sweep, tasks, rows, [],
                                                           method=str(cfg.secondary_method))
    compared = {name: study.compare(name, d) for name, d in views.items()}
    study.jobs.write_log()
    write_summary(cfg, compared, results, power, study.arms, seeds, rows)
    print(f"[robustness_study] done in {time.perf_counter() - t0:.0f} s; results in {results}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
