"""``compare --sweep``: arms across seeds, hierarchical bootstrap, consistency, refusals."""
from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from coin_lightning.compare import main
from coin_lightning.eval.reports.tables import write_results
from coin_lightning.eval.scoring.bootstrap import hierarchical_bootstrap
from coin_lightning.eval.scoring.comparison import ComparisonError
from coin_lightning.eval.scoring.metrics import RunDirError, consistency, fingerprint, read_metrics, summarize
from coin_lightning.eval.scoring.sweep import compare_sweep, results_dir
from tests.eval.eval_helpers import bars, capture_figures, xtick_labels

REPO = Path(__file__).resolve().parents[3]
LEVELS = {"clean": "clean", "deepwordbug": "character", "checklist": "sentence"}
CATEGORY = {"rte": "nli", "sst2": "sentiment"}
N_ROWS, N_INST = 10, 3


def rows_with(correct) -> list[dict]:
    """Prediction rows of rte/sst2 x LEVELS x N_INST instructions x N_ROWS rows; gold is 1 and the
    prediction is ``int(correct(task, perturbation, instruction, row))``."""
    return [{"task": t, "category": c, "perturbation": p, "level": lv, "instruction_index": i,
             "uid": f"{t}/validation/{r}", "gold": 1, "pred": int(correct(t, p, i, r))}
            for t, c in CATEGORY.items() for p, lv in LEVELS.items() for i in range(N_INST) for r in range(N_ROWS)]


def make_job(sweep: Path, n: int, overrides: list[str], rows: list[dict], subdir: str | None = None,
             instructions=None) -> Path:
    """A Hydra job directory ``sweep/n`` with overrides and evaluation outputs (in ``subdir`` if given)."""
    job = sweep / str(n)
    res = job / subdir if subdir else job
    uids = {t: [f"{t}/validation/{r}" for r in range(N_ROWS)] for t in CATEGORY}
    metrics = summarize(rows)
    metrics["fingerprint"] = fingerprint(uids, instructions or {"clean": {"rte": ["a"]}})
    metrics["run"] = {"model": "tiny:llama"}
    write_results(res, rows, metrics)
    (job / ".hydra").mkdir(parents=True, exist_ok=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    return job


def random_rows(p: float, seed: int) -> list[dict]:
    rng = random.Random(seed)
    table = {(t, q, i, r): rng.random() < p for t in CATEGORY for q in LEVELS for i in range(N_INST) for r in range(N_ROWS)}
    return rows_with(lambda *k: table[k])


def test_arms_means_stds_and_deltas_match_each_jobs_metrics(tmp_path, monkeypatch):
    from coin_lightning.eval.reports import comparison as report

    figures = capture_figures(monkeypatch, report)
    sweep = tmp_path / "multirun"
    n = 0
    job_rows = []
    for lam, p in (("0", 0.5), ("1000", 0.7)):
        for seed in (1, 2, 3):
            job_rows.append(random_rows(p, 10 * n))
            make_job(sweep, n, ["data=glue", f"loss.lambda={lam}", f"seed={seed}"], job_rows[-1],
                     subdir="eval" if n % 2 else None)
            n += 1
    cmp = compare_sweep(sweep, bootstrap=200)
    assert cmp["arm_names"] == ["loss.lambda=0", "loss.lambda=1000"] and cmp["reference"] == "loss.lambda=0"
    assert cmp["arms"]["loss.lambda=0"]["seeds"] == [1, 2, 3]
    per_job = [read_metrics(results_dir(sweep / str(k))) for k in range(6)]
    for a, arm in enumerate(cmp["arm_names"]):
        jobs = per_job[3 * a:3 * a + 3]
        for lv in ("clean", "character", "sentence"):
            vals = [m["per_level"][lv]["mean"] for m in jobs]
            got = cmp["arms"][arm]["accuracy"][lv]
            assert got["mean"] == pytest.approx(statistics.fmean(vals))
            assert got["std"] == pytest.approx(statistics.stdev(vals))
            assert got["low"] <= got["mean"] <= got["high"]
        assert cmp["arms"][arm]["accuracy"]["perturbed"]["mean"] == pytest.approx(
            statistics.fmean(m["overall"]["perturbed"] for m in jobs))
        assert cmp["arms"][arm]["pdr"]["perturbed"]["mean"] == pytest.approx(statistics.fmean(m["overall"]["pdr"] for m in jobs))
    delta = cmp["delta"]["loss.lambda=1000 - loss.lambda=0"]
    want = statistics.fmean(per_job[3 + k]["overall"]["perturbed"] - per_job[k]["overall"]["perturbed"] for k in range(3))
    assert delta["perturbed"]["delta"] == pytest.approx(want)
    assert delta["perturbed"]["low"] <= want <= delta["perturbed"]["high"]
    out = tmp_path / "out"
    assert main(["--sweep", str(sweep), "--out", str(out), "--bootstrap", "50"]) == 0
    text = (out / "comparison.md").read_text()
    assert "Sweep comparison" in text and "loss.lambda=1000 - loss.lambda=0" in text and "Consistency" in text
    assert json.loads((out / "comparison.json").read_text())["bootstrap"]["resamples"] == 50
    for png in ("accuracy_by_level.png", "consistency.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG")
    # the figures: a group per level (+ perturbed), a bar per arm at the mean over its seeds of each job's value
    levels = ["clean", "character", "sentence", "perturbed"]
    accuracy, consistent = figures[out / "accuracy_by_level.png"], figures[out / "consistency.png"]
    assert xtick_labels(accuracy) == levels and xtick_labels(consistent) == levels
    assert list(bars(accuracy)) == list(bars(consistent)) == cmp["arm_names"]
    for a, arm in enumerate(cmp["arm_names"]):
        jobs = per_job[3 * a:3 * a + 3]
        want = [statistics.fmean(m["per_level"][lv]["mean"] for m in jobs) for lv in levels[:3]]
        want.append(statistics.fmean(m["overall"]["perturbed"] for m in jobs))
        assert bars(accuracy)[arm] == pytest.approx([100 * w for w in want], abs=1e-9)
        cons = [consistency(r) for r in job_rows[3 * a:3 * a + 3]]
        want = [statistics.fmean(c["per_level"][lv] for c in cons) for lv in levels[:3]]
        want.append(statistics.fmean(c["perturbed"] for c in cons))
        assert bars(consistent)[arm] == pytest.approx([100 * w for w in want], abs=1e-9)


def test_zero_variance_and_constant_difference():
    wrong = rows_with(lambda *k: False)
    right = rows_with(lambda *k: True)
    res = hierarchical_bootstrap([right] * 3, [wrong] * 3, resamples=300)
    for c in [*res["per_level"].values(), res["perturbed"], *res["per_task_level"]]:
        assert (c["delta"], c["low"], c["high"]) == pytest.approx((1.0, 1.0, 1.0))
    same = hierarchical_bootstrap([wrong, right], [wrong, right], resamples=300)
    assert all((c["delta"], c["low"], c["high"]) == (0.0, 0.0, 0.0) for c in same["per_level"].values())


def test_seed_resampling_gives_the_exact_seed_distribution_and_widens_the_interval():
    """Seed 1 gains 1.0 everywhere, seeds 2 and 3 nothing: rows and instructions do not matter, and
    the seed mean of a bootstrap replicate is K/3 with K ~ Binomial(3, 1/3), whose 2.5 and 97.5
    percentiles are 0 and 1 (P(K=3) = 1/27 > 2.5%)."""
    wrong = rows_with(lambda *k: False)
    right = rows_with(lambda *k: True)
    res = hierarchical_bootstrap([right, wrong, wrong], [wrong] * 3, resamples=4000, seed=2)
    clean = res["per_level"]["clean"]
    assert clean["delta"] == pytest.approx(1 / 3)
    assert (clean["low"], clean["high"]) == pytest.approx((0.0, 1.0))
    no_seeds = hierarchical_bootstrap([right, wrong, wrong], [wrong] * 3, resamples=4000, seed=2,
                                      resample=("rows", "instructions"))["per_level"]["clean"]
    assert (no_seeds["low"], no_seeds["high"]) == pytest.approx((1 / 3, 1 / 3))
    # with noisy rows, adding seeds to the resampled units widens the interval
    noisy = [random_rows(0.6, s) for s in (1, 2, 3)]
    base = [random_rows(0.5, s) for s in (4, 5, 6)]
    shifted = [noisy[0], rows_with(lambda *k: False), rows_with(lambda *k: True)]
    full = hierarchical_bootstrap(shifted, base, resamples=2000)["perturbed"]
    inner = hierarchical_bootstrap(shifted, base, resamples=2000, resample=("rows", "instructions"))["perturbed"]
    assert full["delta"] == pytest.approx(inner["delta"])
    assert full["high"] - full["low"] > 2 * (inner["high"] - inner["low"])


def test_independent_seeds_see_the_seed_spread_that_pairing_cancels():
    """Both arms: seed 1 right everywhere, seed 2 wrong. Paired, every difference is 0. Drawn
    independently, each arm's seed mean is K/2 with K ~ Binomial(2, 1/2); the difference is 1 or -1
    with probability 1/16 each (> 2.5%), so the interval is exactly [-1, 1]."""
    wrong, right = rows_with(lambda *k: False), rows_with(lambda *k: True)
    paired = hierarchical_bootstrap([right, wrong], [right, wrong], resamples=4000, seed=3)
    independent = hierarchical_bootstrap([right, wrong], [right, wrong], resamples=4000, seed=3, pair_seeds=False)
    assert paired["pair_seeds"] and not independent["pair_seeds"]
    for res, want in ((paired, (0.0, 0.0, 0.0)), (independent, (0.0, -1.0, 1.0))):
        c = res["perturbed"]
        assert (c["delta"], c["low"], c["high"]) == pytest.approx(want)
    # independently drawn seeds may differ in number: the point estimate is the difference of the seed means
    three = hierarchical_bootstrap([right, wrong, wrong], [right, wrong], resamples=0, pair_seeds=False)
    assert three["per_level"]["clean"]["delta"] == pytest.approx(1 / 3 - 1 / 2)


def test_robustness_effect_is_the_difference_of_drops():
    """The effect of a level is (arm - reference) at that level minus (arm - reference) at clean,
    computed here from the correctness of each cell by hand; a constant gain has no effect."""
    arm = [random_rows(0.7, s) for s in (1, 2)]
    ref = [random_rows(0.5, s) for s in (3, 4)]
    res = hierarchical_bootstrap(arm, ref, resamples=500, seed=1)

    def acc(runs, level):
        vals = [int(r["pred"] == r["gold"]) for rows in runs for r in rows if r["level"] == level]
        return sum(vals) / len(vals)  # every (task, instruction, row) cell has the same weight here

    for level in ("character", "sentence"):
        want = (acc(arm, level) - acc(arm, "clean")) - (acc(ref, level) - acc(ref, "clean"))
        got = res["robustness_effect"][level]
        assert got["delta"] == pytest.approx(want) and got["low"] <= got["delta"] <= got["high"]
    perturbed = res["robustness_effect"]["perturbed"]
    assert perturbed["delta"] == pytest.approx(res["perturbed"]["delta"] - res["per_level"]["clean"]["delta"])
    right, wrong = rows_with(lambda *k: True), rows_with(lambda *k: False)
    gain = hierarchical_bootstrap([right] * 2, [wrong] * 2, resamples=200)["robustness_effect"]["perturbed"]
    assert (gain["delta"], gain["low"], gain["high"]) == pytest.approx((0.0, 0.0, 0.0))


def test_seed_pairing_is_stated_from_the_overrides(tmp_path):
    sweep = tmp_path / "sweep"
    for n, (lam, seed) in enumerate([(0, 1), (0, 2), (1000, 1), (1000, 2)]):
        make_job(sweep, n, [f"loss.lambda={lam}", f"seed={seed}"], random_rows(0.6, n))
    cmp = compare_sweep(sweep, bootstrap=50)
    assert cmp["pairing"]["holds"] and cmp["pairing"]["varying"] == ["loss.lambda"]
    assert set(cmp["delta_independent"]) == set(cmp["delta"]) == {"loss.lambda=1000 - loss.lambda=0"}
    lr = tmp_path / "lr"
    for n, (lam, seed) in enumerate([(0, 1), (0, 2), (1000, 1), (1000, 2)]):
        make_job(lr, n, [f"loss.lambda={lam}", f"model.lora.r={8 if lam else 16}", f"seed={seed}"], random_rows(0.6, n))
    held = compare_sweep(lr, bootstrap=0)["pairing"]
    assert not held["holds"] and "model.lora.r" in held["reason"]


def test_consistency_counts_rows_answered_alike():
    rows = rows_with(lambda t, p, i, r: r < 4 or (r < 7 and i == 0))   # rows 0-3 always right, 4-6 only under #0
    cons = consistency(rows)
    # clean: one perturbation, 3 instructions; rows 0-3 and 7-9 are answered alike, 4-6 are not
    cell = next(c for c in cons["per_task_level"] if c["task"] == "rte" and c["level"] == "clean")
    assert (cell["consistency"], cell["n_rows"], cell["n_instructions"]) == (pytest.approx(0.7), N_ROWS, N_INST)
    assert cons["per_level"]["character"] == pytest.approx(0.7) and cons["perturbed"] == pytest.approx(0.7)
    flipped = [dict(r, pred=1 - r["pred"]) if r["level"] == "sentence" and r["instruction_index"] == 1 else r for r in rows]
    assert consistency(flipped)["per_level"]["sentence"] == pytest.approx(0.0)  # every row now changes its answer


@pytest.mark.parametrize("case, message", [
    ("instructions", "used different instructions"),
    ("seeds", "a paired comparison needs the same seeds"),
    ("negative", "must be >= 0"),
    ("reference", "is not an arm"),
    ("duplicate", "have the same seed"),
])
def test_refusals_in_one_line(tmp_path, capsys, case, message):
    sweep = tmp_path / "multirun"
    rows = random_rows(0.5, 0)
    specs = [("0", 1), ("0", 2), ("1000", 1), ("1000", 2)]
    if case == "seeds":
        specs[-1] = ("1000", 3)
    if case == "duplicate":
        specs[1] = ("0", 1)
    for n, (lam, seed) in enumerate(specs):
        inst = {"clean": {"rte": ["b" if case == "instructions" and n == 3 else "a"]}}
        make_job(sweep, n, [f"loss.lambda={lam}", f"seed={seed}"], rows, instructions=inst)
    args = ["--sweep", str(sweep), "--out", str(tmp_path / "out"), "--bootstrap", "-1" if case == "negative" else "20"]
    if case == "reference":
        args += ["--reference", "loss.lambda=5"]
    with pytest.raises(SystemExit, match=r"^2$") as err:  # the status; the message goes to stderr
        main(args)
    assert err.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_negative_bootstrap_is_refused_for_run_directories_too(tmp_path, capsys):
    runs = [str(make_job(tmp_path / "m", n, [f"seed={n}"], random_rows(0.5, n))) for n in range(2)]
    with pytest.raises(SystemExit, match=r"^2$") as err:  # the status; the message goes to stderr
        main([*runs, "--bootstrap", "-3", "--out", str(tmp_path / "out")])
    assert err.value.code == 2
    assert "--bootstrap -3" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_job_without_results(tmp_path):
    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    with pytest.raises(RunDirError, match="no metrics.json in the job directory or its eval/"):
        results_dir(job)
    with pytest.raises(ComparisonError, match="must be >= 0"):
        compare_sweep(tmp_path, bootstrap=-5)


def test_end_to_end_over_two_tiny_evaluation_arms(tmp_path, shared_data):
    """``evaluate -m`` with two arms (rank, generate) x two seeds on the tiny LLaMA, then ``compare --sweep``."""
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "coin_lightning.evaluate", "-m", "model=tiny_llama", f"data.root={shared_data / 'glue'}",
           "eval.tasks=[sst2]", "eval.samples_per_task=3", "eval.levels=[clean,character]",
           "eval.perturb.perturbations=[deepwordbug]", "eval.max_new_tokens=2", "eval.method=rank,generate",
           "seed=1,2", f"hydra.sweep.dir={sweep}"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "out"
    assert main(["--sweep", str(sweep), "--out", str(out), "--bootstrap", "100", "--reference", "eval.method=rank"]) == 0
    cmp = json.loads((out / "comparison.json").read_text())
    assert cmp["arm_names"] == ["eval.method=rank", "eval.method=generate"]
    jobs = {a: [read_metrics(results_dir(j)) for j in cmp["arms"][a]["jobs"]] for a in cmp["arm_names"]}
    want = statistics.fmean(g["per_level"]["clean"]["mean"] - r["per_level"]["clean"]["mean"]
                            for g, r in zip(jobs["eval.method=generate"], jobs["eval.method=rank"]))
    got = cmp["delta"]["eval.method=generate - eval.method=rank"]["per_level"]["clean"]
    assert got["delta"] == pytest.approx(want) and got["low"] <= want <= got["high"]
