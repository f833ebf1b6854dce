"""The stages of the robustness study (:class:`Study`): training jobs (pilot, sweep, the attacked
model), the power analysis, the attack, the views (each sweep adapter evaluated again) and
``compare --sweep``. Each job is one command of the package run as a subprocess by
:class:`experiments.robustness_study.jobs.Jobs` (skipped when finished, restored from the committed
results); :mod:`experiments.robustness_study.run` runs the stages in order."""
from __future__ import annotations

import csv
import gzip
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from coin_lightning.eval.scoring.bootstrap import read_predictions
from coin_lightning.io import write_json
from experiments.robustness_study.jobs import DONE, REPO, Jobs
from experiments.robustness_study.power import size_from_pilot

PY = sys.executable
RETRAIN_VAL_LOSS_ATOL = 0.01
"""How far a re-trained adapter's final validation loss (nats per response token) may lie from the one its
sweep job recorded (``--retrain-adapters``); farther, it is not the same model and the view stops."""


def final_val_loss(curve: Path) -> float:
    """The last ``val/loss`` (nats per response token) of a training job's logged curves (``csv/metrics.csv``,
    or its copy ``train_metrics.csv.gz`` in the results).

    Raises:
        SystemExit: one line naming the file when it logged no ``val/loss``.
    """
    opener = gzip.open if curve.suffix == ".gz" else open
    with opener(curve, "rt", encoding="utf-8") as fh:
        values = [row["val/loss"] for row in csv.DictReader(fh) if row.get("val/loss")]
    if not values:
        raise SystemExit(f"error: {curve}: no val/loss logged (a re-trained adapter is checked against it)")
    return float(values[-1])


def _list(xs) -> str:
    return "[" + ",".join(str(x) for x in xs) + "]"


def eval_overrides(cfg: DictConfig, prefix: str, tasks: list[str], rows: int, method: str | None = None) -> list[str]:
    """The evaluation settings of the study as overrides of ``<prefix>.*`` (``eval`` or ``evaluation.eval``)."""
    return [f"{prefix}.tasks={_list(tasks)}", f"{prefix}.samples_per_task={rows}",
            f"{prefix}.method={method or cfg.eval.method}", f"{prefix}.levels={_list(cfg.eval.levels)}"]


class Study:
    """The stages of one study run (see the module docstring)."""

    def __init__(self, cfg: DictConfig, work: Path, results: Path, commit: bool, retrain: bool = False):
        """
        Args:
            retrain: a view that needs the adapter of a sweep job restored from the results re-trains it
                (:meth:`retrain_adapter`) instead of stopping.

        Raises:
            SystemExit: one line naming the study config's ``data`` or ``attack.target.templates`` when the
                directory or file is missing (before any job runs).
        """
        self.cfg, self.work, self.results, self.retrain = cfg, work, results, retrain
        self.jobs = Jobs(REPO, results, commit, work=work)
        self.glue = (REPO / cfg.data / "glue").resolve()
        if not self.glue.is_dir():
            raise SystemExit(f"error: {self.glue} not found (study.yaml data: must hold glue/<task>/<split>.jsonl)")
        target = cfg.attack.get("target") if cfg.attack else None
        self.target_templates = (REPO / cfg.data / str(target.templates)).resolve() if target else None
        """The templates file the attacked model (``attack.target``) is trained on; ``None``: the base model."""
        if self.target_templates is not None and not self.target_templates.is_file():
            raise SystemExit(f"error: study.yaml attack.target.templates: {self.target_templates} "
                             f"not found (a templates file under data: {cfg.data})")
        self.arms = dict(cfg.arms)
        self.view_done: dict[str, dict] = {}
        """Per view, the done marker of each of its jobs."""
        self.reproductions: dict[str, dict] = {}
        """Per sweep job whose adapter was re-trained (:meth:`retrain_adapter`), its check, once per run."""

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
                cmd = self.train_command(job, self.cfg.train, tasks, rows, lam, seed)
                if not self.jobs.restore(group, job.name, job, job / "eval") and group != "pilot":
                    self.reuse_pilot(job, cmd)
                done = self.jobs.run(group, job, cmd, done_when=job / "eval" / "metrics.json", fresh=True)
                labels = {"arm": arm, "lambda": lam, "seed": seed}
                if collect:
                    self.jobs.collect(group, job.name, job, job / "eval", done, labels)
                out.append((job, done, labels))
        return out

    def train_command(self, job: Path, train: list, tasks: list[str], rows: int, lam, seed: int) -> list:
        """The command of one training job of the study: ``train`` overrides, then the tasks, lambda and
        seed, evaluating its own adapter at the end on ``rows`` rows per task (``eval_after_train``)."""
        return [PY, "-m", "coin_lightning.train", f"model={self.cfg.model}", *train, f"data.root={self.glue}",
                f"data.tasks={_list(tasks)}", f"loss.lambda={lam}", f"seed={seed}", "eval_after_train=true",
                *eval_overrides(self.cfg, "evaluation.eval", tasks, rows), f"hydra.run.dir={job}"]

    def collect_sweep(self, sweep: list[tuple], views: list[str]) -> None:
        """Copy each sweep job's small outputs to the results, after those of its ``views`` (so a sweep
        job in the results has every evaluation the study needs), and commit them together."""
        for job, done, labels in sweep:
            mine = [v for v in views if job.name in self.view_done[v]]  # a view may cover some seeds only
            paths = [p for v in mine for p in self.jobs.collect(f"views/{v}", job.name, self.work / "views" / v / job.name,
                                                                self.work / "views" / v / job.name / "eval",
                                                                self.view_done[v][job.name], commit=False)]
            paths += self.jobs.collect("sweep", job.name, job, job / "eval", done, labels, commit=False)
            self.jobs.commit_paths(paths, f"robustness study: sweep/{job.name} and its views {', '.join(mine)} "
                                          f"(ran on {done['commit']})")

    def reuse_pilot(self, job: Path, cmd: list) -> None:
        """Copy the pilot's job of the same arm and seed when it ran exactly ``cmd`` (same sizes; the commands
        compared in their portable form, :meth:`Jobs.portable`, whatever the interpreter or checkout that ran
        it), so it is not trained twice."""
        pilot = self.work / "pilot" / job.name
        marker = pilot / DONE
        if (job / DONE).is_file() or not marker.is_file() or not (pilot / "adapter").is_dir():
            return  # a pilot job restored from the results has no adapter to evaluate the views with
        same = self.jobs.portable(" ".join(shlex.quote(str(c)) for c in cmd).replace(str(job), str(pilot)))
        done = json.loads(marker.read_text(encoding="utf-8"))
        if self.jobs.portable(done["command"]) == same:
            shutil.rmtree(job, ignore_errors=True)
            shutil.copytree(pilot, job)
            write_json(job / DONE, {**done, "wall_s": 0.0, "command": f"# {job.name}: the pilot's job, the same command",
                                    "reused_from": self.jobs.portable(str(pilot))})

    def view_jobs(self, view: str, jobs: list[tuple], tasks: list[str], rows: int, extra: list[str],
                  method: str | None = None) -> Path:
        """Evaluate each sweep adapter again (``extra`` overrides) into ``<work>/views/<view>/<job>/eval``,
        with the training job's overrides beside it, so the view reads as a sweep; a view job in the
        results is restored from there. Its small outputs are collected by :meth:`collect_sweep`, except
        those of a job whose adapter was re-trained (``--retrain-adapters``), collected as each finishes.

        Raises:
            SystemExit: a job to evaluate has no adapter (its sweep job was restored from the results) and
                ``--retrain-adapters`` is off.
        """
        root = self.work / "views" / view
        sweep = jobs[0][0].parent
        dests = [root / job.name for job, _, _ in jobs]
        for (_, done, _), dest in zip(jobs, dests):  # only beside the adapter it evaluated (restored with it)
            if done.get("restored_from"):
                self.jobs.restore(f"views/{view}", dest.name, dest, dest / "eval")
        lacking = [d.name for d in dests if not (d / DONE).is_file() and not (sweep / d.name / "adapter").is_dir()]
        if lacking and not self.retrain:
            raise SystemExit(f"error: view {view} needs the adapters of sweep jobs {', '.join(lacking)}, which are not in "
                             f"{sweep} (adapters are not committed): rerun with the --work that trained them, with "
                             f"--retrain-adapters, or delete {self.results / 'jobs' / 'sweep'}/{{{','.join(lacking)}}} "
                             f"to re-train those jobs")

        def command(pending: list[Path]) -> list:  # one evaluate multirun over the unfinished jobs
            return [PY, "-m", "coin_lightning.evaluate", "-m", f"model={self.cfg.model}",
                    f"+study_job={','.join(p.name for p in pending)}", f"adapter={sweep}/${{study_job}}/adapter",
                    f"data.root={self.glue}", *eval_overrides(self.cfg, "eval", tasks, rows, method), *extra,
                    f"hydra.sweep.dir={root}", "hydra.sweep.subdir=${study_job}/eval"]

        def overrides(job: Path, dest: Path) -> None:  # after its evaluation: a stopped run leaves no empty job
            (dest / ".hydra").mkdir(parents=True, exist_ok=True)
            shutil.copy2(job / ".hydra" / "overrides.yaml", dest / ".hydra" / "overrides.yaml")

        def on_retrained(d: Path) -> bool:  # evaluated, or to evaluate, on a re-trained adapter
            if (d / DONE).is_file():
                return "adapter" in json.loads((d / DONE).read_text(encoding="utf-8"))
            return d.name in lacking or (self.work / "retrained" / d.name / DONE).is_file()

        retrained = [d.name for d in dests if on_retrained(d)]
        done: dict[str, dict] = {}
        # seed by seed across the arms, so that a stopped run leaves the arms evenly evaluated
        for job, _, labels in sorted((j for j in jobs if j[0].name in retrained), key=lambda j: j[2]["seed"]):
            dest = root / job.name
            reproduction = self.retrain_adapter(job, labels, tasks, rows)  # skipped (its wall time counted) once done
            marker, = self.jobs.run_many(f"view {view}", [dest], command, "eval/metrics.json")
            overrides(job, dest)
            if "adapter" not in marker:
                marker = {**marker, "adapter": reproduction}
                write_json(dest / DONE, marker)
            self.jobs.collect(f"views/{view}", dest.name, dest, dest / "eval", marker)
            done[dest.name] = marker
        rest = [(job, dest) for (job, _, _), dest in zip(jobs, dests) if dest.name not in done]
        markers = self.jobs.run_many(f"view {view}", [dest for _, dest in rest], command, "eval/metrics.json")
        for (job, dest), marker in zip(rest, markers):
            overrides(job, dest)
            done[dest.name] = marker
        self.view_done[view] = {d.name: done[d.name] for d in dests}
        return root

    def retrain_adapter(self, job: Path, labels: dict, tasks: list[str], rows: int) -> dict:
        """Re-train the adapter of a sweep job restored from the results (adapters are not committed): its
        training command without the evaluation at the end, into ``<work>/retrained/<job>``, linked as
        ``<job>/adapter`` (once: a later view reuses it); then compare its final validation loss with the
        one the job recorded.

        Returns:
            ``{"retrained": dir, "val_loss_recorded", "val_loss_retrained", "val_loss_abs_diff"}`` (nats
            per response token), kept in each view job's record.

        Raises:
            SystemExit: the losses differ by more than :data:`RETRAIN_VAL_LOSS_ATOL` (not the same model).
        """
        if job.name in self.reproductions:  # once per run, whichever views use it
            return self.reproductions[job.name]
        out = self.work / "retrained" / job.name
        cmd = [("eval_after_train=false" if c == "eval_after_train=true" else c)
               for c in self.train_command(out, self.cfg.train, tasks, rows, labels["lambda"], labels["seed"])]
        self.jobs.run("retrain", out, cmd, done_when=out / "adapter" / "adapter_config.json", fresh=True)
        if not (job / "adapter").exists():
            (job / "adapter").symlink_to(out / "adapter", target_is_directory=True)
        recorded = final_val_loss(self.results / "jobs" / "sweep" / job.name / "train_metrics.csv.gz")
        retrained = final_val_loss(out / "csv" / "metrics.csv")
        diff = abs(retrained - recorded)
        print(f"[robustness_study] retrained {job.name}: final val/loss {retrained:.6f} (recorded {recorded:.6f})", flush=True)
        if diff > RETRAIN_VAL_LOSS_ATOL:
            raise SystemExit(f"error: retrained {job.name}: final val/loss {retrained:.4f} against the recorded "
                             f"{recorded:.4f} (more than {RETRAIN_VAL_LOSS_ATOL} apart: not the same model); see {out}")
        self.reproductions[job.name] = {"retrained": str(out), "val_loss_recorded": recorded,
                                        "val_loss_retrained": retrained, "val_loss_abs_diff": diff}
        return self.reproductions[job.name]

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
        """Attack one model in neither arm once (``attack.target``: null = the base model, else an adapter
        trained for it by :meth:`attack_target`); keep the instructions found and record the settings and
        the accuracy drop, in ``<results>/jobs/attack/<base|target>/`` and as ``attacked_instructions.yaml``
        and ``attack.json`` (the set the attacked view evaluates).

        Returns:
            ``<results>/attacked_instructions.yaml``.
        """
        a = self.cfg.attack
        method = str(a.get("method") or self.cfg.eval.method)  # what the search lowers on the attacked model
        name = "target" if a.get("target") else "base"
        job, rec = self.work / "attack" / name, self.results / "jobs" / "attack" / name
        adapter = self.work / "attack" / "target_model" / "adapter" if name == "target" else None
        settings = {"model": self.cfg.model, "adapter": None if adapter is None else str(adapter),
                    "target": OmegaConf.to_container(a.target) if name == "target" else None, "tasks": tasks,
                    "rows_per_task": a.rows_per_task, "method": method, "levels": list(self.cfg.eval.levels),
                    "query_budget": a.query_budget, "probe_size": a.probe_size,
                    "search": "greedy (coin_lightning.eval.instructions.adversarial)"}
        found, kept = job / "eval" / "adversarial_instructions.yaml", rec / "adversarial_instructions.yaml"
        self.jobs.restore("attack", name, job, job / "eval", {"eval/adversarial_instructions.yaml": kept})
        if not (job / DONE).is_file() and adapter is not None:
            self.attack_target(tasks)
        cmd = [PY, "-m", "coin_lightning.evaluate", f"model={self.cfg.model}", f"data.root={self.glue}",
               *([f"adapter={adapter}"] if adapter is not None else []),
               *eval_overrides(self.cfg, "eval", tasks, a.rows_per_task, method), "eval.perturb_mode=adversarial",
               f"eval.query_budget={a.query_budget}", f"eval.probe_size={a.probe_size}", f"hydra.run.dir={job / 'eval'}"]
        done = self.jobs.run("attack", job, cmd, done_when=found)
        if done.get("restored_from") and (rec / "attack.json").is_file():  # recorded when it ran (paths portable)
            shutil.copy2(rec / "attack.json", self.results / "attack.json")
            shutil.copy2(kept, self.results / "attacked_instructions.yaml")
            return self.results / "attacked_instructions.yaml"
        m = OmegaConf.to_container(OmegaConf.load(job / "eval" / "metrics.json"))
        per_level = {lv: 100 * v["mean"] for lv, v in m["per_level"].items()}
        record = {"settings": settings, "commit": done["commit"], "accuracy_on_attacked_model": per_level,
                  "clean": 100 * m["overall"]["clean"], "perturbed": 100 * m["overall"]["perturbed"],
                  "drop_points": 100 * (m["overall"]["clean"] - m["overall"]["perturbed"]),
                  "drop_points_per_level": {lv: per_level["clean"] - v for lv, v in per_level.items() if lv != "clean"}}
        paths = self.jobs.collect("attack", name, job, job / "eval", done, commit=False)
        rec.mkdir(parents=True, exist_ok=True)
        shutil.copy2(found, kept)
        write_json(rec / "attack.json", self.jobs.portable_record(record))
        shutil.copy2(found, self.results / "attacked_instructions.yaml")
        shutil.copy2(rec / "attack.json", self.results / "attack.json")
        paths += [kept, rec / "attack.json", self.results / "attacked_instructions.yaml", self.results / "attack.json"]
        self.jobs.commit_paths(paths, f"robustness study: attack of the {name} model (ran on {done['commit']})")
        return self.results / "attacked_instructions.yaml"

    def attack_target(self, tasks: list[str]) -> Path:
        """Train the attacked model of ``attack.target`` into ``<work>/attack/target_model``: the study's
        training job with ``target.templates`` (under the study's ``data``) in place of its templates, at
        ``target.lambda`` and ``target.seed``, so it is in neither arm; it evaluates itself on the default
        set at ``attack.rows_per_task`` rows (its competence, collected to the results).

        Returns:
            Its adapter directory.
        """
        t, rows = self.cfg.attack.target, int(self.cfg.attack.rows_per_task)
        job = self.work / "attack" / "target_model"
        train = [o for o in self.cfg.train if not str(o).startswith("data.templates=")]
        cmd = self.train_command(job, [*train, f"data.templates={self.target_templates}"], tasks, rows, t["lambda"], t.seed)
        done = self.jobs.run("attack target", job, cmd, done_when=job / "adapter" / "adapter_config.json", fresh=True)
        self.jobs.collect("attack", "target_model", job, job / "eval", done, {"lambda": t["lambda"], "seed": t.seed})
        return job / "adapter"

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
