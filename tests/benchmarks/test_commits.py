"""``python -m experiments.benchmarks.commits``: two source trees measured side by side, outputs compared."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from experiments.benchmarks import commits
from experiments.benchmarks.commit_report import compare_outputs, figures, verdict


def _git_repo() -> bool:
    if shutil.which("git") is None:
        return False
    proc = subprocess.run(["git", "-C", str(commits.REPO), "rev-parse", "--verify", "HEAD"], capture_output=True)
    return proc.returncode == 0


@pytest.mark.skipif(not _git_repo(), reason="git or the repository's history is not available")
def test_same_commit_twice_runs_and_predicts_identically(tmp_path, capsys):
    """HEAD against HEAD, both checked out as temporary worktrees: same code, so identical outputs."""
    before = subprocess.run(["git", "-C", str(commits.REPO), "worktree", "list"], capture_output=True, text=True).stdout
    # --tolerance 1000: head would have to take 1001x base's time to fail on speed, so with the same code
    # the verdict is known in advance: passed, no reasons, status 0 (an output that differs would fail it)
    argv = ["--base", "HEAD", "--head", "HEAD", "--quick", "--model", "tiny_llama", "--threads", "1",
            "--eval-rows", "8", "--eval-batch-size", "4", "--max-new-tokens", "3", "--tolerance", "1000",
            "--out", str(tmp_path)]
    status = commits.main(argv)
    sha = subprocess.run(["git", "-C", str(commits.REPO), "rev-parse", "HEAD"], capture_output=True,
                         text=True).stdout.strip()[:9]
    data = json.loads((tmp_path / f"commits-{sha}-{sha}.json").read_text())
    table = capsys.readouterr().out
    assert "| CoIN training step, s/step |" in table and "Host CPU:" in table
    assert (tmp_path / f"commits-{sha}-{sha}.md").read_text() in table
    for what in ("coin", "rank", "generate"):
        assert data["outputs"][what]["identical"], what
    assert data["outputs"]["rank"]["max_score_diff"] == 0.0
    assert len(data["predictions"]["base/generate"]["answer"]) == 8
    assert data["trees"]["base"]["coin_lightning"] != data["trees"]["head"]["coin_lightning"]  # one tree each
    assert data["verdict"] == {"passed": True, "reasons": [], "tolerance": 1000.0}
    assert status == 0 and "Verdict: PASS" in table
    after = subprocess.run(["git", "-C", str(commits.REPO), "worktree", "list"], capture_output=True, text=True).stdout
    assert after == before  # the temporary worktrees are gone


def test_bad_revision_fails_in_one_line_and_worktree_is_head():
    if not _git_repo():
        pytest.skip("git or the repository's history is not available")
    with pytest.raises(SystemExit, match=r"^error: git rev-parse"):
        commits.resolve("no-such-revision-xyz")
    head = subprocess.run(["git", "-C", str(commits.REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert commits.resolve("worktree") | {"dirty": None} == {"rev": "worktree", "sha": head.strip(), "label": "worktree",
                                                             "dirty": None}


def _outputs(answers_head: list[str]) -> dict[str, list[dict]]:
    coin = {"losses": [{"loss": 3.0, "ce": 2.0, "info_nce": 1.0}]}
    rank = {"pred": [0, 1], "scores": [[-1.0, -2.0], [-3.0, -1.5]]}
    return {
        "base/coin": [coin, coin], "head/coin": [{"losses": [{"loss": 3.0 + 1e-6, "ce": 2.0, "info_nce": 1.0}]}] * 2,
        "base/rank": [rank], "head/rank": [rank],
        "base/generate": [{"pred": [0, 1], "answer": ["no", "yes"]}],
        "head/generate": [{"pred": [0, 1], "answer": answers_head}],
    }


def test_outputs_compared_per_row_and_losses_within_tolerance():
    same = compare_outputs(_outputs(["no", "yes"]), loss_rtol=1e-4)
    assert all(same[w]["identical"] for w in ("coin", "rank", "generate"))
    assert same["coin"]["max_rel_diff"] == pytest.approx(1e-6 / 3.0)
    assert not compare_outputs(_outputs(["no", "yes"]), loss_rtol=1e-8)["coin"]["identical"]
    differ = compare_outputs(_outputs(["no", "yep"]), loss_rtol=1e-4)["generate"]
    assert not differ["identical"] and differ["differing_rows"] == [1]
    # an answer stopped once decided is a prefix of the full one: the same, when the label ids are
    assert compare_outputs(_outputs(["no", "yes, it"]), loss_rtol=1e-4)["generate"]["identical"]


def test_ratios_are_paired_and_the_tolerance_bounds_head_time():
    rounds = {
        "base/coin": [{"wall_s": 2.0}, {"wall_s": 4.0}, {"wall_s": 2.0}],
        "head/coin": [{"wall_s": 2.4}, {"wall_s": 4.0}, {"wall_s": 2.5}],  # per round 0.833, 1.0, 0.8
        "base/rank": [{"wall_s": 1.0}] * 3, "head/rank": [{"wall_s": 1.0}] * 3,
        "base/generate": [{"wall_s": 2.0}] * 3, "head/generate": [{"wall_s": 1.0}] * 3,
    }
    figs = figures(rounds, "wall", n_batches=2, n_rows=10)
    assert figs["coin"]["ratio"] == pytest.approx(2.0 / 2.4)
    assert figs["coin"]["base"] == pytest.approx(1.0) and figs["coin"]["head"] == pytest.approx(1.25)  # median s / 2 steps
    assert figs["generate"]["head"] == pytest.approx(10.0) and figs["generate"]["ratio"] == pytest.approx(2.0)
    same = compare_outputs(_outputs(["no", "yes"]), loss_rtol=1e-4)
    failed = verdict(figs, same, tolerance=0.10)
    assert not failed["passed"] and len(failed["reasons"]) == 1 and failed["reasons"][0].startswith("coin:")
    assert verdict(figs, same, tolerance=0.25)["passed"]  # 1.2x base's time is within 25%


def _measured(head_s: dict[str, float], head_answers: list[str], rounds: int = 3) -> dict:
    """What :func:`commits.measure` returns, made up: base takes 1 s on every measurement and head
    ``head_s[what]``; every run computes the same losses and label ids, head's ``generate`` answers
    ``head_answers`` (base: no, yes)."""
    coin = {"losses": [{"loss": 3.0, "ce": 2.0, "info_nce": 1.0}]}
    rank = {"pred": [0, 1], "scores": [[-1.0, -2.0], [-3.0, -1.5]]}
    outputs = {"base": {"coin": coin, "rank": rank, "generate": {"pred": [0, 1], "answer": ["no", "yes"]}},
               "head": {"coin": coin, "rank": rank, "generate": {"pred": [0, 1], "answer": head_answers}}}
    seconds = {"base": dict.fromkeys(outputs["base"], 1.0), "head": head_s}
    setups = {side: {"coin_lightning": f"/trees/{side}/src/coin_lightning/__init__.py", "loss": {"lambda": 1000.0},
                     "model": "tiny:llama", "build_s": 0.1,
                     "warmup": {w: {"wall_s": 1.0, "output": out} for w, out in outputs[side].items()}}
              for side in outputs}
    timed = {f"{side}/{w}": [{"wall_s": seconds[side][w], "cpu_s": seconds[side][w], "output": out}] * rounds
             for side in outputs for w, out in outputs[side].items()}
    inputs = {"source": "embedded", "batch_shape": "8x32", "batches": 1, "eval_task": "embedded_parity", "eval_rows": 2}
    return {"inputs": inputs, "setups": setups, "rounds": timed, "trees": {"base": "/trees/base", "head": "/trees/head"}}


@pytest.mark.parametrize("head_s, head_answers, status, reasons", [
    ({"coin": 0.5, "rank": 0.9, "generate": 1.0}, ["no", "yes"], 0, []),  # head faster or as fast, same outputs
    ({"coin": 1.05, "rank": 1.0, "generate": 1.0}, ["no", "yes"], 0, []),  # 5% slower: within the 10% tolerance
    ({"coin": 2.0, "rank": 1.0, "generate": 1.0}, ["no", "yes"], 1,
     ["coin: head takes 2.000x base's time (limit 1.10x)"]),
    ({"coin": 1.0, "rank": 1.0, "generate": 0.5}, ["no", "yep"], 1, ["generate: outputs differ between base and head"]),
])
def test_status_follows_a_verdict_known_in_advance(tmp_path, monkeypatch, capsys, head_s, head_answers, status, reasons):
    """``main`` on made-up measurements (no git, no probes): the exit status and the verdict's reasons are
    the ones the constructed times and outputs call for."""
    monkeypatch.setattr(commits, "resolve", lambda rev: {"rev": rev, "sha": rev * 8, "label": rev})
    monkeypatch.setattr(commits, "measure", lambda args, sides, scratch: _measured(head_s, head_answers))
    argv = ["--base", "aaaa", "--head", "bbbb", "--model", "tiny_llama", "--rounds", "3", "--clock", "wall",
            "--out", str(tmp_path)]
    assert commits.main(argv) == status
    data = json.loads((tmp_path / "commits-aaaa-bbbb.json").read_text())
    assert data["verdict"] == {"passed": status == 0, "reasons": reasons, "tolerance": 0.10}
    for what, seconds in head_s.items():
        assert data["figures"][what]["ratio"] == pytest.approx(1.0 / seconds)  # base / head time, per round
    assert data["outputs"]["generate"]["differing_rows"] == ([1] if head_answers != ["no", "yes"] else [])
    assert data["outputs"]["coin"]["identical"] and data["outputs"]["rank"]["identical"]
    assert ("Verdict: PASS" if status == 0 else "Verdict: FAIL") in capsys.readouterr().out
