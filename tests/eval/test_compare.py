"""``coin_lightning.compare``: side-by-side deltas, refusal of mismatched runs, sweeps, bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from coin_lightning.compare import main
from coin_lightning.eval.reports.tables import write_results
from coin_lightning.eval.scoring.comparison import ComparisonError, compare_runs, read_overrides, sweep_points
from coin_lightning.eval.scoring.metrics import FILES, RunDirError, fingerprint, summarize
from tests.eval.eval_helpers import bars, capture_figures, xtick_labels

REPO = Path(__file__).resolve().parents[2]
UIDS = {"rte": ["rte/validation/1", "rte/validation/2", "rte/validation/3", "rte/validation/4"]}
INSTRUCTIONS = {"clean": {"rte": ["a"]}, "deepwordbug": {"rte": ["b"]}}


def make_run(path: Path, correct: dict[str, int], uids=UIDS, instructions=INSTRUCTIONS, adapter=None) -> Path:
    """A run directory whose rte accuracy per perturbation is ``correct[p] / 4``."""
    level = {"clean": "clean", "deepwordbug": "character"}
    rows = [{"task": "rte", "category": "nli", "perturbation": p, "level": level[p], "instruction_index": 0,
             "uid": uids["rte"][i], "gold": 0, "pred": 0 if i < k else 1} for p, k in correct.items() for i in range(4)]
    metrics = summarize(rows)
    metrics["fingerprint"] = fingerprint(uids, instructions)
    metrics["run"] = {"model": "tiny:llama", "adapter": adapter}
    write_results(path, rows, metrics)
    return path


def test_side_by_side_with_deltas(tmp_path):
    base = make_run(tmp_path / "base", {"clean": 4, "deepwordbug": 2})
    coin = make_run(tmp_path / "coin", {"clean": 4, "deepwordbug": 3}, adapter=str(tmp_path / "coin_run" / "adapter"))
    cmp = compare_runs([base, coin], None)
    assert cmp["names"] == ["tiny:llama", "coin_run"]
    assert cmp["per_level"]["character"]["coin_run"]["delta"] == pytest.approx(0.75 - 0.5)
    assert cmp["per_level"]["clean"]["coin_run"]["delta"] == pytest.approx(0.0)
    assert cmp["per_level"]["character"]["coin_run"]["pdr"] == pytest.approx(1 - 0.75 / 1.0)
    assert cmp["per_level"]["perturbed"]["tiny:llama"]["mean"] == pytest.approx(0.5)


def test_cli_writes_table_plot_and_json(tmp_path, capsys, monkeypatch):
    from coin_lightning.eval.reports import comparison as report

    figures = capture_figures(monkeypatch, report)
    base = make_run(tmp_path / "base", {"clean": 4, "deepwordbug": 2})
    other = make_run(tmp_path / "other", {"clean": 3, "deepwordbug": 1})
    out = tmp_path / "cmp"
    assert main([str(base), str(other), "--names", "base", "continual", "--out", str(out)]) == 0
    text = (out / "comparison.md").read_text()
    assert "Δ continual vs base" in text and "-25.00" in text
    assert (out / "comparison.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "differences.png").read_bytes().startswith(b"\x89PNG")  # the bootstrap's paired differences
    # the bars: a group per level and "perturbed", a bar per run at its accuracy (make_run: correct / 4)
    fig = figures[out / "comparison.png"]
    assert xtick_labels(fig) == ["clean", "character", "perturbed"]
    assert bars(fig) == {"base": [100.0, 50.0, 50.0], "continual": [75.0, 25.0, 25.0]}
    # the paired differences: continual - base is -25 points at every level (each row's answer flips alike)
    ax = figures[out / "differences.png"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["clean", "character", "perturbed"]
    assert list(ax.lines[0].get_ydata()) == pytest.approx([-25.0, -25.0, -25.0])
    assert json.loads((out / "comparison.json").read_text())["names"] == ["base", "continual"]


@pytest.mark.parametrize("what, kwargs, message", [
    ("rows", {"uids": {"rte": ["rte/validation/1", "rte/validation/2", "rte/validation/3", "rte/validation/9"]}},
     "different rows"),
    ("instructions", {"instructions": {"clean": {"rte": ["a"]}, "deepwordbug": {"rte": ["c"]}}}, "different instructions"),
])
def test_refuses_runs_on_different_rows_or_instructions(tmp_path, what, kwargs, message, capsys):
    base = make_run(tmp_path / "base", {"clean": 4, "deepwordbug": 2})
    other = make_run(tmp_path / "other", {"clean": 4, "deepwordbug": 2}, **kwargs)
    with pytest.raises(ComparisonError, match=message):
        compare_runs([base, other])
    with pytest.raises(SystemExit, match=r"^2$") as err:  # the status; the message goes to stderr
        main([str(base), str(other), "--out", str(tmp_path / "cmp")])
    assert err.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()


def test_run_directory_without_results(tmp_path):
    base = make_run(tmp_path / "base", {"clean": 4, "deepwordbug": 2})
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="no metrics.json"):
        compare_runs([base, tmp_path / "empty"])
    with pytest.raises(RunDirError, match="not a directory"):
        compare_runs([base, tmp_path / "missing"])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / FILES["metrics"]).write_text("{")
    with pytest.raises(RunDirError, match="unreadable JSON"):
        compare_runs([base, tmp_path / "broken"])
    with pytest.raises(ComparisonError, match="at least two"):
        compare_runs([base])


def _job(sweep: Path, n: int, value, correct: int, instructions=None) -> Path:
    job = make_run(sweep / str(n), {"clean": 4, "deepwordbug": correct},
                   instructions=instructions or {"clean": {"rte": ["a"]}, "deepwordbug": {"rte": [f"b{value}"]}})
    (job / ".hydra").mkdir()
    (job / ".hydra" / "overrides.yaml").write_text(
        f"- model=tiny_llama\n- eval.perturb.character.max_words={value}\n")
    return job


def test_sweep_reads_overrides_and_plots(tmp_path, monkeypatch):
    from coin_lightning.eval.reports import comparison as report

    figures = capture_figures(monkeypatch, report)
    sweep = tmp_path / "multirun"
    for n, (value, correct) in enumerate([(4, 1), (1, 3), (2, 2)]):
        _job(sweep, n, value, correct)
    parameter, points = sweep_points(sweep)
    assert parameter == "eval.perturb.character.max_words"
    assert [v for v, _, _ in points] == [1, 2, 4]
    assert [m["per_level"]["character"]["mean"] for _, m, _ in points] == [0.75, 0.5, 0.25]
    assert read_overrides(sweep / "0") == {"model": "tiny_llama", "eval.perturb.character.max_words": 4}
    out = tmp_path / "out"
    assert main(["--sweep", str(sweep), "--out", str(out)]) == 0
    assert (out / "sweep.png").read_bytes().startswith(b"\x89PNG")
    ax = figures[out / "sweep.png"].axes[0]  # a line per level over the swept values, sorted
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines}
    assert lines == {"clean": ([1, 2, 4], [100.0, 100.0, 100.0]), "character": ([1, 2, 4], [75.0, 50.0, 25.0])}
    assert ax.get_xlabel() == "eval.perturb.character.max_words"
    assert "| 1 | 100.00 | 75.00 |" in (out / "sweep.md").read_text()


def test_sweep_bad_input(tmp_path):
    with pytest.raises(RunDirError, match="no Hydra job directories"):
        sweep_points(tmp_path)
    sweep = tmp_path / "multirun"
    _job(sweep, 0, 1, 3)
    _job(sweep, 1, 1, 2)
    with pytest.raises(ComparisonError, match="0 overrides vary"):
        sweep_points(sweep)


def test_real_hydra_multirun_sweep(tmp_path, shared_data):
    """``evaluate -m`` over a perturbation strength, then ``compare --sweep`` on its directory."""
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "coin_lightning.evaluate", "-m", "model=tiny_llama", f"data.root={shared_data / 'glue'}",
           "eval.tasks=[sst2]", "eval.samples_per_task=2", "eval.levels=[clean,character]",
           "eval.perturb.perturbations=[deepwordbug]", "eval.max_new_tokens=2",
           "eval.perturb.character.max_words=1,3", f"hydra.sweep.dir={sweep}"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    parameter, points = sweep_points(sweep)
    assert parameter == "eval.perturb.character.max_words" and [v for v, _, _ in points] == [1, 3]
    assert points[0][1]["fingerprint"]["rows"] == points[1][1]["fingerprint"]["rows"]
    assert points[0][1]["fingerprint"]["instructions"] != points[1][1]["fingerprint"]["instructions"]
