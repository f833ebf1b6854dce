"""``experiments/robustness_study/run.py`` end to end on the tiny random LLaMA (``--smoke`` sizes):
pilot, power, attack, sweep, the attacked view, compare, summary; a rerun skips every finished job;
``--commit`` commits each job's small outputs and nothing else; from a clean checkout (no work
directory) every job is restored from the committed results and none runs again; ``--retrain-adapters``
re-trains the adapters a new view needs and checks them against the recorded validation loss."""
from __future__ import annotations

import csv
import gzip
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf
from safetensors.torch import load_file

from experiments.robustness_study.instruction_study import InstructionStudy
from experiments.robustness_study.jobs import DONE, WORK, Jobs, local, portable, shell_line
from experiments.robustness_study.run import main
from experiments.robustness_study.stages import Study

SCHEMA_ARM = {"lambda", "pooling", "append_eos", "seeds", "clean", "perturbed", "consistency", "per_task_clean"}


def _git(repo, *args) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def test_smoke_study_end_to_end_rerun_and_commits(tmp_path, shared_data):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "root")
    results, work = repo / "results", tmp_path / "work"
    results.mkdir()  # the committed screen that chose the candidate tasks (python -m experiments.robustness_study.power)
    (results / "screen.json").write_text(json.dumps({"kept": ["sst2"], "dropped": {"cola": "not learned"}}))
    _git(repo, "add", "results/screen.json")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "screen")
    (repo / "unrelated.txt").write_text("staged, never committed by the study\n")
    _git(repo, "add", "unrelated.txt")
    argv = ["--smoke", "--work", str(work), "--results", str(results), "--commit"]
    env_user = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env_user.items():
            mp.setenv(k, v)
        assert main(argv) == 0
        summary = json.loads((results / "summary.json").read_text())
        assert summary["primary_metric"] == "rank"  # the smoke sizes evaluate with rank (study.yaml: generate)
        assert set(summary["arms"]) == {"continual", "coin"}
        for arm in summary["arms"].values():
            assert set(arm) == SCHEMA_ARM and arm["seeds"] == [1, 2] and set(arm["per_task_clean"]) == {"sst2"}
        assert summary["arms"]["coin"]["lambda"] == 1000.0
        (key, delta), = summary["delta_perturbed"].items()
        assert key == "coin - continual" and delta["ci95"][0] <= delta["mean"] <= delta["ci95"][1]
        lo, hi = delta["ci95_independent_seeds"]
        assert lo <= delta["mean"] <= hi
        # the smoke arms differ in loss.lambda only and keep the data defaults: seeds pair, EOS is pooled
        assert summary["pairing"]["holds"] and summary["pairing"]["varying"] == ["loss.lambda"]
        assert {(a["pooling"], a["append_eos"]) for a in summary["arms"].values()} == {("last", True)}
        assert set(summary["instruction_sets"]) == {"default", "attacked"}
        assert summary["tasks"]["screened_out"] == {"cola": "not learned"}
        # each arm's figures are the mean of its jobs' own evaluations
        for name, arm in summary["arms"].items():
            per_job = [json.loads((results / "jobs" / "sweep" / f"{name}_seed{s}" / "metrics.json").read_text())
                       for s in (1, 2)]
            assert arm["perturbed"] == pytest.approx(100 * sum(m["overall"]["perturbed"] for m in per_job) / 2, abs=1e-3)
        # the attacked file is what the attacked view evaluated; attack settings and drop recorded
        attack = json.loads((results / "attack.json").read_text())
        assert attack["settings"]["query_budget"] == 2 and attack["settings"]["target"]["seed"] == 0
        # the attacked model is in neither arm: an adapter trained on FLAN's templates (study.yaml attack.target)
        assert attack["settings"]["adapter"] == "<work>/attack/target_model/adapter"  # records name no path of this machine
        target = json.loads((results / "jobs" / "attack" / "target_model" / "job.json").read_text())
        assert target["command"].startswith("python -m coin_lightning.train ")
        assert "data.templates=" + portable(str((shared_data / "flan" / "templates.json").resolve())) in target["command"]
        for record in (results / "jobs").rglob("*"):
            if record.suffix in (".json", ".yaml"):
                assert str(work) not in record.read_text() and "/.venv/" not in record.read_text(), record
        assert "loss.lambda=0 seed=0" in target["command"] and "data.templates=own" not in target["command"]
        assert attack == json.loads((results / "jobs" / "attack" / "target" / "attack.json").read_text())
        assert (results / "attacked_instructions.yaml").read_text() == \
            (work / "attack" / "target" / "eval" / "adversarial_instructions.yaml").read_text()
        assert attack["settings"]["method"] == "rank"  # study.yaml's attack.method
        assert attack["drop_points"] == pytest.approx(attack["clean"] - attack["perturbed"])
        view = json.loads((work / "views" / "attacked" / "coin_seed1" / "eval" / "metrics.json").read_text())
        assert view["run"]["instructions"] == str(results / "attacked_instructions.yaml")
        # small outputs per job, with the commit it ran on; compressed predictions readable
        job = json.loads((results / "jobs" / "pilot" / "coin_seed2" / "job.json").read_text())
        assert job["seed"] == 2 and job["commit"] and "coin_lightning.train" in job["command"]
        with gzip.open(results / "jobs" / "pilot" / "coin_seed2" / "predictions.jsonl.gz", "rt") as fh:
            assert json.loads(fh.readline())["task"] == "sst2"
        with gzip.open(results / "jobs" / "pilot" / "coin_seed2" / "train_metrics.csv.gz", "rt") as fh:
            assert {"train/ce", "train/info_nce"} <= set(fh.readline().strip().split(","))  # the logged curves
        power = json.loads((results / "power.json").read_text())
        assert power["tasks"]["kept"] == ["sst2"] and power["chosen"]["seeds"] == 2
        stages = json.loads((results / "stages.json").read_text())
        assert {"pilot", "power", "attack target", "attack", "sweep", "view attacked", "compare"} <= set(stages)
        assert stages["sweep"]["jobs_skipped"] == 4  # the sweep's jobs are the pilot's (same sizes): reused
        assert (results / "commands.sh").read_text().count("coin_lightning.train") == 4 + 1  # the pilot's, the target
        for png in ("accuracy_by_level.png", "consistency.png", "attacked/consistency.png"):
            assert (results / png).read_bytes().startswith(b"\x89PNG")
        # commits hold only the study's files; the unrelated staged file stays staged
        committed = _git(repo, "log", "--name-only", "--format=")
        assert "results/jobs/pilot/coin_seed1/metrics.json" in committed and "unrelated.txt" not in committed
        assert "A  unrelated.txt" in _git(repo, "status", "--porcelain")
        n_commits = _git(repo, "rev-list", "--count", "HEAD")
        # a rerun runs no job again and gives the same summary; attack=null leaves out the attacked set
        before = {p: p.stat().st_mtime for p in (work / "sweep").glob("*/done.json")}
        assert main(argv + ["--set", "attack=null"]) == 0
        assert set(json.loads((results / "summary.json").read_text())["instruction_sets"]) == {"default"}
        assert {p: p.stat().st_mtime for p in (work / "sweep").glob("*/done.json")} == before
        again = json.loads((results / "stages.json").read_text())
        assert all(s["jobs_run"] == 0 for k, s in again.items() if k != "power")
        assert json.loads((results / "summary.json").read_text())["arms"] == summary["arms"]
        assert _git(repo, "rev-list", "--count", "HEAD") == n_commits
        # another published set and a secondary method on the same adapters: only those evaluations run
        published = tmp_path / "published.yaml"
        published.write_text(yaml.safe_dump({"clean": {"sst2": ["Is this review positive or negative?"]},
                                             "deepwordbug": {"sst2": ["Is this reveiw positive or negative?"]}}))
        assert main(argv + ["--instructions-file", str(published), "--set", "secondary_method=generate"]) == 0
        third = json.loads((results / "stages.json").read_text())
        assert third["sweep"]["jobs_run"] == 0 and third["view file_published"]["jobs_run"] == 4
        assert third["view generate"]["jobs_run"] == 4 and third["view attacked"]["jobs_run"] == 0
        final = json.loads((results / "summary.json").read_text())
        assert set(final["instruction_sets"]) == {"default", "attacked", "file_published"}
        assert final["secondary"]["metric"] == "exact_match" and set(final["secondary"]["arms"]) == {"continual", "coin"}
        assert final["arms"] == summary["arms"]
        view = json.loads((work / "views" / "file_published" / "coin_seed2" / "eval" / "metrics.json").read_text())
        assert view["overall"]["n_examples"] == 2 * 4  # 2 instructions x 4 rows
        # a clean checkout: no work directory and only what was committed under results/
        argv3 = argv + ["--instructions-file", str(published), "--set", "secondary_method=generate"]
        n_commits = _git(repo, "rev-list", "--count", "HEAD")
        assert "results/jobs/views/generate/coin_seed1/predictions.jsonl.gz" in _git(repo, "ls-files")
        trained = tmp_path / "coin_seed1_adapter"  # kept to compare with its re-training below
        shutil.copytree(work / "sweep" / "coin_seed1" / "adapter", trained)
        shutil.rmtree(work)
        _git(repo, "clean", "-fdxq", "results")
        work = tmp_path / "clean_work"  # another --work: the records name theirs <work>
        argv = ["--smoke", "--work", str(work), "--results", str(results), "--commit"]
        argv3 = argv + ["--instructions-file", str(published), "--set", "secondary_method=generate"]
        assert not (results / "summary.json").exists() and (results / "power.json").is_file()
        assert main(argv3) == 0
        clean = json.loads((results / "stages.json").read_text())
        for stage, rec in clean.items():  # every job and the power analysis restored, none re-run
            if stage != "compare":  # compare --sweep is recomputed from the restored predictions
                assert rec["jobs_run"] == 0 and rec["wall_s"] == third[stage]["wall_s"], stage
        assert clean["pilot"]["jobs_restored"] == 4 and clean["sweep"]["jobs_restored"] == 4
        assert clean["view file_published"]["jobs_restored"] == 4 and clean["attack"]["jobs_restored"] == 1
        assert _git(repo, "rev-list", "--count", "HEAD") == n_commits and not _git(repo, "status", "--porcelain", "--untracked-files=no", "results")
        assert json.loads((results / "attack.json").read_text()) == attack
        restored = json.loads((results / "summary.json").read_text())
        assert {k: v for k, v in restored.items() if k != "stages"} == {k: v for k, v in final.items() if k != "stages"}
        done = json.loads((work / "sweep" / "coin_seed1" / "done.json").read_text())
        record = json.loads((results / "jobs" / "sweep" / "coin_seed1" / "job.json").read_text())
        assert done == {**record, "restored_from": str(results / "jobs" / "sweep" / "coin_seed1")} and record["commit"]
        assert not (work / "sweep" / "coin_seed1" / "adapter").exists()
        # an instruction set not evaluated before needs the adapters, which are not committed: one line
        other = tmp_path / "other.yaml"
        other.write_text(published.read_text())
        with pytest.raises(SystemExit, match=r"^error: view file_other needs the adapters of sweep jobs continual_seed1, "
                                             r"continual_seed2, coin_seed1, coin_seed2, which are not in .*re-train"):
            main(argv + ["--instructions-file", str(other)])
        assert main(argv3) == 0  # and a rerun of the restored work directory commits nothing either
        assert _git(repo, "rev-list", "--count", "HEAD") == n_commits
        # --retrain-adapters: each missing adapter re-trained once with its job's command, checked against the
        # recorded validation loss; the secondary view (rank) on the first seed of each arm only
        argv4 = argv + ["--instructions-file", str(other), "--retrain-adapters", "--set", "secondary_method=rank",
                        "secondary_seeds=1"]
        assert main(argv4) == 0
        fourth = json.loads((results / "stages.json").read_text())
        assert fourth["retrain"] == {**fourth["retrain"], "jobs_run": 4, "jobs_skipped": 0}  # each adapter once
        assert fourth["view rank"]["jobs_run"] == 2
        assert "adapter" not in json.loads((work / "views" / "attacked" / "coin_seed1" / "done.json").read_text())
        assert fourth["view file_other"]["jobs_run"] == 4 and fourth["sweep"]["jobs_run"] == 0
        walls = [json.loads((work / "views" / "rank" / n / "done.json").read_text())["wall_s"]
                 for n in ("continual_seed1", "coin_seed1")]
        assert fourth["view rank"]["wall_s"] == pytest.approx(sum(walls), abs=0.2)  # each job counted once
        retrained = {k: v.numpy() for k, v in load_file(work / "sweep" / "coin_seed1" / "adapter" /
                                                        "adapter_model.safetensors").items()}
        original = load_file(trained / "adapter_model.safetensors")
        assert retrained.keys() == original.keys()
        for k, v in original.items():  # the same seed and command give the same adapter
            np.testing.assert_allclose(retrained[k], v.numpy(), rtol=1e-4, atol=1e-6)
        for name in ("continual_seed1", "coin_seed2"):
            record = json.loads((results / "jobs" / "views" / "file_other" / name / "job.json").read_text())
            with gzip.open(results / "jobs" / "sweep" / name / "train_metrics.csv.gz", "rt") as fh:
                logged = [r["val/loss"] for r in csv.DictReader(fh) if r["val/loss"]]
            assert record["adapter"]["val_loss_recorded"] == float(logged[-1])
            assert record["adapter"]["val_loss_retrained"] == pytest.approx(float(logged[-1]), abs=1e-4)
            assert record["adapter"]["retrained"] == f"<work>/retrained/{name}"
        assert sorted(p.name for p in (results / "jobs" / "views" / "rank").iterdir()) == ["coin_seed1", "continual_seed1"]
        secondary = json.loads((results / "summary.json").read_text())["secondary"]
        assert secondary["metric"] == "rank" and all(a["seeds"] == [1] for a in secondary["arms"].values())
        tracked = _git(repo, "ls-files")
        assert "results/jobs/views/file_other/coin_seed2/job.json" in tracked
        assert "results/jobs/views/rank/continual_seed1/predictions.jsonl.gz" in tracked
        # a re-trained adapter whose validation loss is not the recorded one stops the view: one line
        curve = results / "jobs" / "sweep" / "coin_seed1" / "train_metrics.csv.gz"
        with gzip.open(curve, "rt") as fh:
            rows = list(csv.DictReader(fh))
        for r in rows:
            r["val/loss"] = str(float(r["val/loss"]) + 1) if r["val/loss"] else ""
        with gzip.open(curve, "wt", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        shutil.rmtree(work / "retrained" / "coin_seed1")
        (work / "sweep" / "coin_seed1" / "adapter").unlink()
        shutil.rmtree(work / "views" / "rank" / "coin_seed1")
        shutil.rmtree(results / "jobs" / "views" / "rank" / "coin_seed1")
        with pytest.raises(SystemExit, match=r"^error: retrained coin_seed1: final val/loss .* not the same model"):
            main(argv4)


def test_refuses_bad_arguments(tmp_path):
    with pytest.raises(SystemExit, match="instructions-file"):
        main(["--smoke", "--instructions-file", str(tmp_path / "none.yaml"), "--work", str(tmp_path)])
    with pytest.raises(SystemExit, match="sweep.sedes"):
        main(["--smoke", "--set", "sweep.sedes=3", "--work", str(tmp_path)])
    (tmp_path / "data" / "glue").mkdir(parents=True)  # passes the data check without ../shared
    with pytest.raises(SystemExit, match=r"attack.target.templates: .*none.json not found"):
        main(["--smoke", "--set", f"data={tmp_path / 'data'}", "attack.target.templates=none.json",
              "--work", str(tmp_path / "w"), "--results", str(tmp_path / "r")])
    assert not (tmp_path / "w").exists()  # refused before any job
    with pytest.raises(SystemExit, match="glue"):
        main(["--smoke", "--set", f"data={tmp_path}", "--work", str(tmp_path), "--results", str(tmp_path / "r")])


def test_portable_names_no_path_of_the_machine():
    command = ("/work/wt_x/.venv/bin/python3.11 -m coin_lightning.evaluate data.root=/work/shared/data/glue "
               "'adapter=/work/swork/sweep/${study_job}/adapter' 'eval.task_files=[/work/swork/a.yaml,/work/swork/b.yaml]' "
               "eval.instructions_file=/work/wt_x/experiments/x.yaml hydra.run.dir=/work/wt_x/outputs/x 'eval.tasks=[sst2]'")
    out = portable(command, "/work/swork", "/work/wt_x")
    assert out == ("python -m coin_lightning.evaluate data.root=../shared/data/glue 'adapter=<work>/sweep/${study_job}/adapter' "
                   "'eval.task_files=[<work>/a.yaml,<work>/b.yaml]' eval.instructions_file=experiments/x.yaml "
                   "hydra.run.dir=outputs/x 'eval.tasks=[sst2]'")
    assert portable(out, "/work/swork", "/work/wt_x") == out  # idempotent
    # a work directory inside the checkout is <work>; records of several machines at once; text is left alone
    assert portable("/r/outputs/w/pilot/j yes/no", "/r/outputs/w", "/r") == "<work>/pilot/j yes/no"
    assert portable('"/a/w2/x", "/b/main/src/y", "/b/shared/z"', ["/a/w1", "/a/w2"], ["/b/wt", "/b/main"]) == \
        '"<work>/x", "src/y", "../shared/z"'
    # back to this machine for a restored job's overrides; and a line of commands.sh runs with $WORK
    assert local("- data.root=../shared/g\n- data.path=<work>/t.csv\n- f=[<work>/a,<work>/b]\n- s=own\n", Path("/w2"), Path("/b/r")) \
        == "- data.root=/b/shared/g\n- data.path=/w2/t.csv\n- f=[/w2/a,/w2/b]\n- s=own\n"
    line = shell_line(out)
    assert line.startswith("python -m coin_lightning.evaluate data.root=../shared/data/glue adapter=\"$WORK\"'/sweep/${study_job}/adapter' ")
    assert shlex.split(line.replace('"$WORK"', "/w")) == shlex.split(out.replace(WORK, "/w"))


def test_commands_sh_paths_are_relative_to_the_repository():
    committed = (Path(__file__).resolve().parents[2] / "experiments" / "robustness_study" / "results" / "commands.sh").read_text()
    args = [a for line in committed.splitlines()[3:] for a in shlex.split(line, comments=True)]
    assert args and not [a for a in args if re.search(r"(^|[=,\[])/", a)]  # no absolute path ("$WORK"/...: the work dir)
    regime = committed_path = Path(__file__).resolve().parents[2] / "experiments" / "robustness_study" / "results"
    for path in (committed_path / "commands.sh", committed_path / "instruction_regime" / "commands.sh"):
        lines = path.read_text().splitlines()
        assert lines[2] == ': "${WORK:?set WORK to the work directory (--work)}"'
        assert all(line.startswith(("python -m coin_lightning.", "# ")) and not re.search(r"\.\./s(work|tudy)", line)
                   for line in lines[3:])
        assert subprocess.run(["sh", "-n", str(path)]).returncode == 0
    regime = (committed_path / "instruction_regime" / "commands.sh").read_text().splitlines()
    assert regime[3:] and all(line.startswith("python -m coin_lightning.") for line in regime[3:])
    records = [p for p in committed_path.rglob("*") if p.suffix in (".json", ".yaml", ".md", ".sh")]
    assert records and not [p for p in records if "/work/" in p.read_text()]  # no path of the machines that ran them


def test_a_record_from_another_checkout_and_work_directory_is_restored_and_reused(tmp_path):
    shared = tmp_path / "shared" / "data" / "glue"  # the data next to two checkouts, each with its own work directory
    repo1, repo2, work1, work2 = tmp_path / "main", tmp_path / "wt_other", tmp_path / "swork", tmp_path / "work2"
    for d in (shared, repo1, repo2):
        d.mkdir(parents=True)

    def command(python, work, job, lam=0) -> list:  # a training command as the runners build it
        return [python, "-c", "pass", f"data.root={shared}", f"data.path={work}/regime/train.csv", f"loss.lambda={lam}",
                "seed=1", f"hydra.run.dir={job}"]

    job1 = work1 / "pilot" / "steps300"
    (job1 / "eval").mkdir(parents=True)
    (job1 / ".hydra").mkdir()
    (job1 / "eval" / "metrics.json").write_text(json.dumps({"run": {"adapter": str(job1 / "adapter"), "data_root": str(shared),
                                                                   "instructions": f"{repo1}/src/x.yaml (perturbed)"}}, indent=2))
    (job1 / "eval" / "predictions.jsonl").write_text('{"task": "t"}\n')
    (job1 / ".hydra" / "overrides.yaml").write_text(f"- data.root={shared}\n- data.path={work1}/regime/train.csv\n- seed=1\n")
    jobs1 = Jobs(repo1, repo1 / "results", work=work1)
    done = jobs1.run("pilot", job1, command(sys.executable, work1, job1))
    jobs1.collect("pilot", "steps300", job1, job1 / "eval", done, {"setting": "steps300"})
    rec = repo1 / "results" / "jobs" / "pilot" / "steps300"
    for f in ("job.json", "metrics.json", "overrides.yaml"):  # written under repo1 and work1, naming neither
        assert str(tmp_path) not in (rec / f).read_text(), f
    assert json.loads((rec / "job.json").read_text())["command"] == (
        "python -c pass data.root=../shared/data/glue data.path=<work>/regime/train.csv loss.lambda=0 seed=1 "
        "hydra.run.dir=<work>/pilot/steps300")
    assert json.loads((rec / "metrics.json").read_text())["run"] == {
        "adapter": "<work>/pilot/steps300/adapter", "data_root": "../shared/data/glue", "instructions": "src/x.yaml (perturbed)"}
    # another checkout, another work directory and interpreter: the pilot is restored, then reused by the sweep
    shutil.copytree(repo1 / "results", repo2 / "results")
    study = InstructionStudy.__new__(InstructionStudy)
    study.cfg, study.work, study.results = OmegaConf.create({"setting": "steps300"}), work2, repo2 / "results"
    study.jobs = Jobs(repo2, study.results, work=work2)
    python2 = str(repo2 / ".venv" / "bin" / "python")
    pilot = study.train("pilot", "steps300", command(python2, work2, work2 / "pilot" / "steps300"), {"setting": "steps300"})
    assert pilot["restored_from"] and study.jobs.walls["pilot"] == {**study.jobs.walls["pilot"], "jobs_run": 0, "jobs_restored": 1}
    assert (work2 / "pilot" / "steps300" / ".hydra" / "overrides.yaml").read_text() == (  # as a job run here names them
        f"- data.root={shared}\n- data.path={work2}/regime/train.csv\n- seed=1\n")
    other = work2 / "sweep" / "coin_seed1"
    study.reuse_pilot(other, command(python2, work2, other, lam=1000))  # another lambda: not the pilot's job
    assert not (other / DONE).exists()
    job2 = work2 / "sweep" / "continual_seed1"
    study.reuse_pilot(job2, command(python2, work2, job2))
    assert json.loads((job2 / DONE).read_text())["reused_from"] == "pilot/steps300"
    # the sst2 study reuses a pilot job (with its adapter) that a run from another checkout's interpreter left
    sst2 = Study.__new__(Study)
    sst2.work, sst2.jobs = work2, study.jobs
    (work2 / "pilot" / "coin_seed1" / "adapter").mkdir(parents=True)
    old = " ".join(shlex.quote(c) for c in command("/old/venv/bin/python", work2, work2 / "pilot" / "coin_seed1", 1000))
    (work2 / "pilot" / "coin_seed1" / DONE).write_text(json.dumps({"commit": "c", "command": old, "wall_s": 1.0}))
    sst2.reuse_pilot(other, command(python2, work2, other, lam=1000))
    assert json.loads((other / DONE).read_text())["reused_from"] == "<work>/pilot/coin_seed1"


def test_committed_summary_target_follows_its_intervals():
    from experiments.robustness_study.summary import reached_half_width

    summary = json.loads((Path(__file__).resolve().parents[2] / "experiments" / "robustness_study" / "results"
                          / "summary.json").read_text())
    reached = reached_half_width(summary)  # the widest paired interval of the default set (summary --recompare updates it)
    target = summary["target"]
    assert target["reached_half_width_points"] == pytest.approx(reached)
    assert target["met"] == (reached <= target["half_width_points"])
