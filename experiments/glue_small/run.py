"""``make glue-small`` / ``python -m experiments.glue_small.run``: base vs continual instruction tuning
vs CoIN with the embedded SmolLM2-135M on real GLUE data (issue 6), from one command.

Stages (each one the package's own command line, run as a subprocess and logged to ``commands.sh``):

1. train lambda=0 (continual instruction tuning), lambda=1000 (paper) and lambda=1 (below the cap) with
   ``experiment=glue_small`` (conf/experiment/glue_small.yaml): same seed, data order, steps, LoRA;
2. evaluate the base model and each adapter on the same seeded GLUE validation rows with the default
   instruction set (clean + character/word/sentence/semantic perturbations);
3. compare the runs (continual tuning first: every bootstrap interval is "run minus continual");
   then the same with greedy decoding and exact match on ``--generate-tasks`` (cola, sst2: the tasks
   whose FLAN answer options are the evaluated label words);
4. analyze representations (clean vs perturbed cosine, projection plot) of continual tuning and CoIN.

The small outputs (tables, JSON, PNGs) are copied to ``experiments/glue_small/results`` together with
``experiment.json`` (sizes, wall time of every stage, commands, versions). Everything else stays in
``--work`` (default ``outputs/glue_small/<time>``). ``--resume`` skips stages whose outputs exist.

Examples::

    make glue-small
    python -m experiments.glue_small.run --rows 4 --steps 8 --results /tmp/glue_small_smoke
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from coin_lightning.io import write_json

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "experiments" / "glue_small" / "results"
TASKS = ["cola", "sst2", "qqp", "mrpc", "mnli", "qnli", "rte", "wnli"]  # mnli = mnli_matched; no mismatched split in ../shared


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m experiments.glue_small.run", description=__doc__.splitlines()[0])
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 1000.0, 1.0],
                   help="loss.lambda of each training run; 0 = continual instruction tuning (must come first). "
                        "The cap binds whenever lambda*InfoNCE > CE, so with CE ~1 any lambda >~ 10 trains almost like 1000")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default: the experiment config's)")
    p.add_argument("--tasks", nargs="+", default=TASKS, help="GLUE tasks evaluated (default: all 8 of ../shared/data)")
    p.add_argument("--rows", type=int, default=10, help="GLUE validation rows per task (the same for every model)")
    p.add_argument("--method", default="rank", choices=["rank", "generate"], help="evaluation method (eval.method)")
    p.add_argument("--generate-tasks", nargs="*", default=["cola", "sst2"],
                   help="also evaluate these tasks with eval.method=generate (greedy decoding, exact match: the paper's "
                        "metric); FLAN's answer options are the evaluated label words only for cola and sst2. None = skip")
    p.add_argument("--analyze-rows", type=int, default=10, help="rows per task for the representation analysis (0 = skip it)")
    p.add_argument("--instructions-file", default=None,
                   help="evaluate (and analyze) with this {perturbation: {task: [instruction, ...]}} file instead of the default set")
    p.add_argument("--model", default="smollm2_135m", help="model config (conf/model/) for every stage; tiny_llama for smoke tests")
    p.add_argument("--projection", default="umap", choices=["umap", "pca"], help="projection of the representation plot")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the confidence intervals")
    p.add_argument("--data", default="../shared/data", help="directory with glue/ and flan/templates.json")
    p.add_argument("--templates", default="flan", help="training templates: flan (<data>/flan/templates.json, the paper's) "
                   "or own (the project's, whose targets are the evaluated label words)")
    p.add_argument("--skip-base", action="store_true", help="do not evaluate the base model")
    p.add_argument("--work", default=None, help="working directory (default outputs/glue_small/<time>)")
    p.add_argument("--results", default=str(RESULTS), help="where the small result files are written")
    p.add_argument("--resume", action="store_true", help="skip stages whose outputs already exist in --work")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for the training runs")
    return p.parse_args(argv)


def run_name(lam: float) -> str:
    """``continual`` for lambda=0, else ``coin_<lambda>``."""
    return "continual" if lam == 0 else f"coin_{lam:g}"


class Stages:
    """Runs the stages' commands, logging each with its wall time to ``<work>/stages.json``.

    With ``resume``, a stage whose output exists is skipped and keeps the wall time recorded when it ran.
    """

    def __init__(self, work: Path, resume: bool):
        self.work, self.resume = work, resume
        self.record = work / "stages.json"
        self.earlier = json.loads(self.record.read_text()) if resume and self.record.exists() else {}
        self.log: list[dict] = []

    def run(self, name: str, cmd: list[str], done: Path) -> None:
        """Run ``cmd`` from the repository root unless ``--resume`` and ``done`` exists.

        Raises:
            SystemExit: the command failed (its exit status is kept).
        """
        line = " ".join(shlex.quote(c) for c in cmd)
        if self.resume and done.exists():
            print(f"[glue_small] {name}: done already ({done})", flush=True)
            self.log.append({"stage": name, "command": line, "wall_s": self.earlier.get(name, {}).get("wall_s"), "skipped": True})
            return
        print(f"[glue_small] {name}: {line}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO)
        wall = round(time.perf_counter() - t0, 1)
        if proc.returncode != 0:
            raise SystemExit(f"error: stage {name} failed with exit status {proc.returncode}: {line}")
        self.log.append({"stage": name, "command": line, "wall_s": wall, "skipped": False})
        self.earlier[name] = {"wall_s": wall, "command": line}
        self.record.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.record, self.earlier)
        print(f"[glue_small] {name}: {wall} s", flush=True)


def versions() -> dict:
    """Versions of the packages the numbers depend on."""
    out = {"python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor()}
    for pkg in ("torch", "transformers", "peft", "lightning", "coin-lightning"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def collect(work: Path, results: Path, names: list[str], analyzed: list[str], meta: dict, generate: bool) -> None:
    """Copy the small outputs into ``results`` (replaced as a whole, atomically by rename)."""
    results.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".glue_small.", dir=results.parent))
    for sub, tag in [("", "")] + ([("_generate", "_generate")] if generate else []):
        for f in ("md", "json", "png"):
            shutil.copy2(work / f"compare{sub}" / f"comparison.{f}", tmp / f"comparison{tag}.{f}")
        for n in names:
            d = work / f"eval{sub}" / n
            shutil.copy2(d / "results.md", tmp / f"eval{tag}_{n}.md")
            shutil.copy2(d / "metrics_per_task_level.csv", tmp / f"eval{tag}_{n}_per_task_level.csv")
    for n in analyzed:
        d = work / "analyze" / n
        shutil.copy2(d / "analysis.json", tmp / f"analysis_{n}.json")
        shutil.copy2(d / "representations.png", tmp / f"representations_{n}.png")
    for n in names:
        summary = work / "train" / n / "summary.json"
        if summary.exists():
            shutil.copy2(summary, tmp / f"train_{n}.json")
    (tmp / "experiment.json").write_text(json.dumps(meta, indent=2) + "\n")
    (tmp / "commands.sh").write_text("#!/bin/sh\n# the stages run by experiments/glue_small/run.py, in order\n"
                                     + "".join(s["command"] + "\n" for s in meta["stages"]))
    old = results.with_name(results.name + ".old")
    if results.exists():
        results.rename(old)
    tmp.rename(results)
    shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Run every stage; return 0 (a failing stage exits with its message)."""
    args = parse_args(argv)
    if args.lambdas[0] != 0:
        raise SystemExit("error: --lambdas must start with 0 (continual instruction tuning, the comparison's reference)")
    data = Path(args.data).resolve()
    for need in (data / "glue", data / "flan" / "templates.json"):
        if not need.exists():
            raise SystemExit(f"error: {need} not found (--data must hold glue/ and flan/templates.json)")
    work = Path(args.work or f"outputs/glue_small/{time.strftime('%Y-%m-%d_%H-%M-%S')}").resolve()
    py = sys.executable
    stages = Stages(work, args.resume)
    t_all = time.perf_counter()
    common_data = [f"model={args.model}", f"data.root={data / 'glue'}"]
    trained = [run_name(lam) for lam in args.lambdas]

    for lam, name in zip(args.lambdas, trained):
        d = work / "train" / name
        templates = str(data / "flan" / "templates.json") if args.templates == "flan" else args.templates
        cmd = [py, "-m", "coin_lightning.train", "experiment=glue_small", f"loss.lambda={lam:g}",
               f"data.templates={templates}", *common_data, f"hydra.run.dir={d}"]
        if args.steps is not None:
            cmd += [f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.steps}"]
        stages.run(f"train {name}", cmd + list(args.overrides), d / "adapter")

    tasks = "[" + ",".join(args.tasks) + "]"
    evaluated = ([] if args.skip_base else ["base"]) + trained
    instructions = [f"eval.instructions_file={Path(args.instructions_file).resolve()}"] if args.instructions_file else []
    eval_common = [*common_data, *instructions, f"eval.tasks={tasks}", f"eval.samples_per_task={args.rows}",
                   f"eval.method={args.method}", "prompt_format=alpaca"]
    for name in evaluated:
        d = work / "eval" / name
        adapter = [] if name == "base" else [f"adapter={work / 'train' / name / 'adapter'}"]
        stages.run(f"evaluate {name}", [py, "-m", "coin_lightning.evaluate", *adapter, *eval_common,
                                        f"hydra.run.dir={d}"], d / "metrics.json")

    order = trained + ([] if args.skip_base else ["base"])  # continual first: deltas and bootstrap intervals are "run minus continual"
    stages.run("compare", [py, "-m", "coin_lightning.compare", *[str(work / "eval" / n) for n in order],
                           "--names", *order, "--bootstrap", str(args.bootstrap), "--out", str(work / "compare")],
               work / "compare" / "comparison.json")

    if args.generate_tasks:
        gen = [*common_data, *instructions, "eval.tasks=[" + ",".join(args.generate_tasks) + "]",
               f"eval.samples_per_task={args.rows}", "eval.method=generate", "prompt_format=alpaca"]
        for name in evaluated:
            d = work / "eval_generate" / name
            adapter = [] if name == "base" else [f"adapter={work / 'train' / name / 'adapter'}"]
            stages.run(f"evaluate {name} (generate)", [py, "-m", "coin_lightning.evaluate", *adapter, *gen,
                                                       f"hydra.run.dir={d}"], d / "metrics.json")
        stages.run("compare (generate)", [py, "-m", "coin_lightning.compare", *[str(work / "eval_generate" / n) for n in order],
                                          "--names", *order, "--bootstrap", str(args.bootstrap),
                                          "--out", str(work / "compare_generate")],
                   work / "compare_generate" / "comparison.json")

    analyzed = trained[:2] if args.analyze_rows > 0 else []
    for name in analyzed:
        d = work / "analyze" / name
        stages.run(f"analyze {name}", [py, "-m", "coin_lightning.analyze", f"adapter={work / 'train' / name / 'adapter'}",
                                       *common_data, *instructions, f"eval.tasks={tasks}", f"eval.samples_per_task={args.analyze_rows}",
                                       f"analyze.rows={args.analyze_rows}", f"analyze.projection={args.projection}",
                                       "prompt_format=alpaca", f"hydra.run.dir={d}"],
                   d / "analysis.json")

    meta = {
        "command": "python -m experiments.glue_small.run " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "sizes": {"model": args.model, "templates": args.templates, "base_evaluated": not args.skip_base,
                  "lambdas": args.lambdas, "steps": args.steps or "experiment config (conf/experiment/glue_small.yaml)",
                  "eval_tasks": args.tasks, "rows_per_task": args.rows, "method": args.method,
                  "instructions_file": args.instructions_file,
                  "generate_tasks": args.generate_tasks, "analyze_rows_per_task": args.analyze_rows, "bootstrap": args.bootstrap, "overrides": args.overrides},
        "stages": stages.log,
        "wall_s": round(time.perf_counter() - t_all, 1),
        "wall_s_all_stages": round(sum(st["wall_s"] or 0 for st in stages.log), 1),
        "work": str(work),
        "versions": versions(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    collect(work, Path(args.results).resolve(), order, analyzed, meta, bool(args.generate_tasks))
    print(f"[glue_small] done in {meta['wall_s']} s; results in {args.results}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
