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
5. **views**: each sweep adapter evaluated again with the attacked file and the secondary method (then
   the sweep job's small outputs are collected), and with ``--instructions-file``; each view is laid
   out as a sweep (the training job's overrides, the evaluation in ``eval/``);
6. **compare**: ``compare --sweep`` of the sweep and every view; ``results/summary.json``.

Every job leaves ``done.json`` (its commit, command, wall time) and is skipped on rerun
(:mod:`experiments.robustness_study.jobs`); its small outputs go to ``results/jobs/`` as it finishes
(``--commit``: committed with git, with ``power.json`` and the attack's files). Work files go to
``--work`` (default ``outputs/robustness_study``). From a clean checkout (no work directory) a job
whose small outputs are in ``results/jobs/`` is restored from there and not re-run; a sweep job gets
there only once the attacked and secondary views have evaluated its adapter, as adapters are not
committed (a later ``--instructions-file`` needs the ``--work`` that trained them, or re-training).

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

from coin_lightning.eval.scoring.bootstrap import read_predictions
from coin_lightning.io import write_json
from experiments.robustness_study.jobs import DONE, Jobs
from experiments.robustness_study.power import size_from_pilot
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
        self.view_done: dict[str, dict] = {}
        """Per view, the done marker of each of its jobs."""

    def train_jobs(self, group: str, seeds: list[int], tasks: list[str], rows: int, collect: bool = True) -> list[tuple]:
        """Train (and evaluate) every arm x seed into ``<work>/<group>/<arm>_seed<k>``, each restored from
        the results when it finished before; ``collect``: copy each one's small outputs to the results now.

        Returns:
            ``(job dir, done marker, labels)`` of every job.
        """
        out = []
        for arm, lam in self.arms.items():
            for seed in seeds:
                job = self.work / group / f"{arm}_seed{seed}"
                cmd = [PY, "-m", "coin_lightning.train", f"model={self.cfg.model}", *self.cfg.train,
                       f"data.root={self.glue}", f"data.tasks={_list(tasks)}", f"loss.lambda={lam}", f"seed={seed}",
                       "eval_after_train=true", *eval_overrides(self.cfg, "evaluation.eval", tasks, rows),
                       f"hydra.run.dir={job}"]
                if not self.jobs.restore(group, job.name, job, job / "eval") and group != "pilot":
                    self.reuse_pilot(job, cmd)
                done = self.jobs.run(group, job, cmd, done_when=job / "eval" / "metrics.json", fresh=True)
                labels = {"arm": arm, "lambda": lam, "seed": seed}
                if collect:
                    self.jobs.collect(group, job.name, job, job / "eval", done, labels)
                out.append((job, done, labels))
        return out

    def collect_sweep(self, sweep: list[tuple], views: list[str]) -> None:
        """Copy each sweep job's small outputs to the results, after those of its ``views`` (so a sweep
        job in the results has every evaluation the study needs), and commit them together."""
        for job, done, labels in sweep:
            paths = [p for v in views for p in self.jobs.collect(f"views/{v}", job.name, self.work / "views" / v / job.name,
                                                                 self.work / "views" / v / job.name / "eval",
                                                                 self.view_done[v][job.name], commit=False)]
            paths += self.jobs.collect("sweep", job.name, job, job / "eval", done, labels, commit=False)
            self.jobs.commit_paths(paths, f"robustness study: sweep/{job.name} and its views {', '.join(views)} "
                                          f"(ran on {done['commit']})")

    def reuse_pilot(self, job: Path, cmd: list) -> None:
        """Copy the pilot's job of the same arm and seed when it ran exactly ``cmd`` (same sizes), so it
        is not trained twice."""
        pilot = self.work / "pilot" / job.name
        marker = pilot / DONE
        if (job / DONE).is_file() or not marker.is_file() or not (pilot / "adapter").is_dir():
            return  # a pilot job restored from the results has no adapter to evaluate the views with
        same = " ".join(shlex.quote(str(c)) for c in cmd).replace(str(job), str(pilot))
        if json.loads(marker.read_text(encoding="utf-8"))["command"] == same:
            shutil.rmtree(job, ignore_errors=True)
            shutil.copytree(pilot, job)
            done = json.loads(marker.read_text(encoding="utf-8"))
            write_json(job / DONE, {**done, "wall_s": 0.0, "command": f"# {job.name}: the pilot's job, the same command",
                                    "reused_from": str(pilot)})

    def view_jobs(self, view: str, jobs: list[tuple], tasks: list[str], rows: int, extra: list[str],
                  method: str | None = None) -> Path:
        """Evaluate each sweep adapter again (``extra`` overrides) into ``<work>/views/<view>/<job>/eval``,
        with the training job's overrides beside it, so the view reads as a sweep; a view job in the
        results is restored from there. Its small outputs are collected by :meth:`collect_sweep`.

        Raises:
            SystemExit: a job to evaluate has no adapter (its sweep job was restored from the results).
        """
        root = self.work / "views" / view
        sweep = jobs[0][0].parent
        dests = [root / job.name for job, _, _ in jobs]
        for (_, done, _), dest in zip(jobs, dests):  # only beside the adapter it evaluated (restored with it)
            if done.get("restored_from"):
                self.jobs.restore(f"views/{view}", dest.name, dest, dest / "eval")
        lacking = [d.name for d in dests if not (d / DONE).is_file() and not (sweep / d.name / "adapter").is_dir()]
        if lacking:
            raise SystemExit(f"error: view {view} needs the adapters of sweep jobs {', '.join(lacking)}, which are not in "
                             f"{sweep} (adapters are not committed): rerun with the --work that trained them, or delete "
                             f"{self.results / 'jobs' / 'sweep'}/{{{','.join(lacking)}}} to re-train those jobs")

        def command(pending: list[Path]) -> list:  # one evaluate multirun over the unfinished jobs
            return [PY, "-m", "coin_lightning.evaluate", "-m", f"model={self.cfg.model}",
                    f"+study_job={','.join(p.name for p in pending)}", f"adapter={sweep}/${{study_job}}/adapter",
                    f"data.root={self.glue}", *eval_overrides(self.cfg, "eval", tasks, rows, method), *extra,
                    f"hydra.sweep.dir={root}", "hydra.sweep.subdir=${study_job}/eval"]

        markers = self.jobs.run_many(f"view {view}", dests, lambda pending: command(pending), "eval/metrics.json")
        for (job, _, _), dest in zip(jobs, dests):
            (dest / ".hydra").mkdir(parents=True, exist_ok=True)
            shutil.copy2(job / ".hydra" / "overrides.yaml", dest / ".hydra" / "overrides.yaml")
        self.view_done[view] = {d.name: m for d, m in zip(dests, markers)}
        return root

    def power(self) -> dict:
        """Tasks kept and the sweep's sizes from the pilot (``results/power.json``); the recorded one when
        no pilot job ran in this run and the study's settings it was computed from are unchanged."""
        t0 = time.perf_counter()
        inputs = OmegaConf.to_container(OmegaConf.create({"arms": self.arms, "tasks": self.cfg.tasks,
                                                          "pilot": self.cfg.pilot, "power": self.cfg.power}))
        path = self.results / "power.json"
        if self.jobs.walls["pilot"]["jobs_run"] == 0 and path.is_file():
            old = json.loads(path.read_text(encoding="utf-8"))
            if old.get("inputs") == inputs:
                self.jobs.walls["power"] = {"wall_s": old.get("wall_s", 0.0), "jobs_run": 0, "jobs_skipped": 1,
                                            "jobs_restored": 0}
                return old
        seeds = list(self.cfg.pilot.seeds)
        by_arm = {a: [read_predictions(self.work / "pilot" / f"{a}_seed{s}" / "eval") for s in seeds] for a in self.arms}
        out = size_from_pilot(by_arm, self.cfg.pilot.margin_points / 100, **OmegaConf.to_container(self.cfg.power))
        if not out["tasks"]["kept"]:
            write_json(path, {"tasks": out["tasks"]})
            raise SystemExit(f"error: the pilot learned no task above chance; see {path}")
        out = {"pilot": {"seeds": seeds, "rows_per_task": self.cfg.pilot.rows_per_task},
               "target_half_width_points": self.cfg.power.half_width_points, "confidence": self.cfg.power.confidence,
               **out, "inputs": inputs, "wall_s": round(time.perf_counter() - t0, 1)}
        write_json(path, out)
        self.jobs.commit_paths([path], "robustness study: power analysis of the pilot")
        self.jobs.walls["power"] = {"wall_s": out["wall_s"], "jobs_run": 1, "jobs_skipped": 0, "jobs_restored": 0}
        return out

    def attack(self, tasks: list[str]) -> Path:
        """Attack the base model once; copy the instructions found and record settings and drop."""
        a = self.cfg.attack
        method = str(a.get("method") or self.cfg.eval.method)  # what the search lowers on the base model
        job = self.work / "attack"
        settings = {"model": self.cfg.model, "adapter": None, "tasks": tasks, "rows_per_task": a.rows_per_task,
                    "method": method, "levels": list(self.cfg.eval.levels), "query_budget": a.query_budget,
                    "probe_size": a.probe_size, "search": "greedy (coin_lightning.eval.instructions.adversarial)"}
        cmd = [PY, "-m", "coin_lightning.evaluate", f"model={self.cfg.model}", f"data.root={self.glue}",
               *eval_overrides(self.cfg, "eval", tasks, a.rows_per_task, method), "eval.perturb_mode=adversarial",
               f"eval.query_budget={a.query_budget}", f"eval.probe_size={a.probe_size}", f"hydra.run.dir={job / 'eval'}"]
        found = self.results / "attacked_instructions.yaml"
        self.jobs.restore("attack", "base", job, job / "eval", {"eval/adversarial_instructions.yaml": found})
        done = self.jobs.run("attack", job, cmd, done_when=job / "eval" / "adversarial_instructions.yaml")
        shutil.copy2(job / "eval" / "adversarial_instructions.yaml", found)
        m = OmegaConf.to_container(OmegaConf.load(job / "eval" / "metrics.json"))
        per_level = {lv: 100 * v["mean"] for lv, v in m["per_level"].items()}
        write_json(self.results / "attack.json", {
            "settings": settings, "commit": done["commit"], "accuracy_on_base_model": per_level,
            "clean": 100 * m["overall"]["clean"], "perturbed": 100 * m["overall"]["perturbed"],
            "drop_points": 100 * (m["overall"]["clean"] - m["overall"]["perturbed"]),
            "drop_points_per_level": {lv: per_level["clean"] - v for lv, v in per_level.items() if lv != "clean"}})
        paths = self.jobs.collect("attack", "base", job, job / "eval", done, commit=False)
        self.jobs.commit_paths([found, self.results / "attack.json", *paths], f"robustness study: attack (ran on {done['commit']})")
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
    study = Study(cfg, work, results, args.commit)
    t0 = time.perf_counter()
    study.train_jobs("pilot", list(cfg.pilot.seeds), list(cfg.tasks), int(cfg.pilot.rows_per_task))
    power = study.power()
    tasks = power["tasks"]["kept"]
    attacked = study.attack(tasks) if cfg.attack else None  # attack: null skips the attack and its view
    seeds, rows = _sizes(cfg, power)
    sweep = study.train_jobs("sweep", seeds, tasks, rows, collect=False)
    views = {"default": work / "sweep"}  # the views every sweep job needs before it counts as finished
    if attacked is not None:
        views["attacked"] = study.view_jobs("attacked", sweep, tasks, rows, [f"eval.instructions_file={attacked}"])
    if cfg.get("secondary_method"):
        views[str(cfg.secondary_method)] = study.view_jobs(str(cfg.secondary_method), sweep, tasks, rows, [],
                                                           method=str(cfg.secondary_method))
    study.collect_sweep(sweep, [v for v in views if v != "default"])
    if extra_file is not None:  # needs the adapters (the --work that trained them) unless already in the results
        name = f"file_{extra_file.stem}"
        views[name] = study.view_jobs(name, sweep, tasks, rows, [f"eval.instructions_file={extra_file}"])
        for job, _, _ in sweep:
            study.jobs.collect(f"views/{name}", job.name, work / "views" / name / job.name,
                               work / "views" / name / job.name / "eval", study.view_done[name][job.name])
    compared = {name: study.compare(name, d) for name, d in views.items()}
    study.jobs.write_log()
    write_summary(cfg, compared, results, power, study.arms, seeds, rows)
    print(f"[robustness_study] done in {time.perf_counter() - t0:.0f} s; results in {results}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
