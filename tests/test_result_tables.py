"""The README's result tables are printed from the committed per-draw files, and nothing else."""
from pathlib import Path

import numpy as np

from galmeta import result_tables as rt
from galmeta.data import load_galaxies
from galmeta.tasks import build_catalogue

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_tables_are_the_committed_results():
    assert (ROOT / "results" / "redness_per_draw.csv.gz").is_file()
    changed = rt.update_readme(ROOT / "README.md", ROOT / "results", check=True)
    assert not changed, f"the README's tables differ from results/: {changed}; run python -m galmeta.result_tables"
    readme = (ROOT / "README.md").read_text()
    for name in rt.readme_sections(ROOT / "results"):
        assert rt.MARK_START.format(name=name) in readme


def test_a_changed_readme_table_is_caught_and_rewritten(tmp_path):
    readme = tmp_path / "README.md"
    original = (ROOT / "README.md").read_text()
    start = rt.MARK_START.format(name="sdss-development headline")
    readme.write_text(original.replace(start, start + "\n| a hand-typed row |", 1))
    assert "sdss-development headline" in rt.update_readme(readme, ROOT / "results", check=True)
    assert rt.main(["--readme", str(readme), "--results", str(ROOT / "results"), "--check"]) == 1
    assert rt.main(["--readme", str(readme), "--results", str(ROOT / "results")]) == 0
    assert readme.read_text() == original


def test_the_per_draw_file_has_the_promised_columns_and_every_unit():
    per_draw = rt.read_per_draw(ROOT / "results" / "redness_per_draw.csv.gz")
    required = ("dataset", "sample", "learner", "group", "k", "seed", "fold", "block", "slice", "draw", "n_query",
                "sse", "nll_sum", "n_in68", "n_in95", "n_label_correct")
    assert set(required) <= set(per_draw.columns)
    assert set(per_draw["sample"]) == {"development"} and per_draw.seeds == [0, 1, 2, 3, 4]
    assert per_draw.ks == [1, 5, 10, 20] and len(set(per_draw["block"])) == 10
    n_rows = len(per_draw.learners) * 4 * 5 * 10 * len(set(zip(per_draw["fold"], per_draw["slice"])))
    assert len(per_draw["k"]) == n_rows
    assert np.all(per_draw["n_in95"][np.isfinite(per_draw["n_in95"])] <= per_draw["n_query"][np.isfinite(per_draw["n_in95"])])


def test_the_readme_counts_the_sealed_galaxies_it_names():
    table = load_galaxies()
    everything = build_catalogue(table, sample="all")
    text = f"{int(everything.sealed.sum()):,} of the\n  {len(everything.target):,} clean galaxies"
    assert text in (ROOT / "README.md").read_text(), text


def test_the_runtime_table_comes_from_the_measured_file():
    record = {"machine": "x86_64, 2 CPU cores", "date": "2026-12-01", "before": "a" * 40, "after": "b" * 40,
              "how": "side by side", "modes": {"laptop": {"04_maml_torch": {"before": 261.0, "after": 87.0},
                                                         "06_redness_evaluation": {"before": 830.0, "after": 166.0}},
                                              "ci": {"04_maml_torch": {"before": 70.0, "after": 70.0}}}}
    table = rt.runtime_markdown(record)
    assert "| `04_maml_torch` | 261.0 s | 87.0 s | 3.0× | 70.0 s | 70.0 s | 1.0× | not measured |" in table
    assert "| `06_redness_evaluation` | 830.0 s | 166.0 s | 5.0× | — | — | — | not measured |" in table
    assert "**1091 s** | **253 s** | **4.3×**" in table  # the sums of the rows, and their ratio
    assert "commit `aaaaaaa`" in table and "commit `bbbbbbb`" in table
