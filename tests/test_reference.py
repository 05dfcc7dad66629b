"""The committed three-seed reference and how a notebook's own run is judged against it:
paired gains, the seed-noise verdict and the lambda sweep, on hand-made tables with values
worked out by hand; and the committed CSV itself (three seeds of every row)."""

import numpy as np
import pandas as pd
import pytest

from segda import results, rows


def _runs(rows):
    return pd.DataFrame([{"run": f"seed{s}/{k}", "seed": s, "target_miou": v,
                          "lambda_adv_main": lam} for k, s, v, lam in rows])


REF = _runs([
    ("source_only", 0, 60.0, 0.0), ("source_only", 1, 58.0, 0.0),
    ("source_only", 2, 62.0, 0.0),
    # gains 3, 4, 5: mean 4, std 1
    ("advent", 0, 63.0, 0.01), ("advent", 1, 62.0, 0.01), ("advent", 2, 67.0, 0.01),
    # gains +1, -1, +0.5: mean 1/6, std sqrt(((5/6)^2 + (7/6)^2 + (1/3)^2) / 2) = 1.0408
    ("minent", 0, 61.0, 0.0), ("minent", 1, 57.0, 0.0), ("minent", 2, 62.5, 0.0),
    ("output_adv_single", 0, 59.0, 0.001), ("output_adv_single", 1, 57.0, 0.001),
    ("output_adv_single", 2, 61.0, 0.001),
    ("output_adv_single@lambda0.01", 0, 50.0, 0.01),
    ("output_adv_single@lambda0.01", 1, 49.0, 0.01),
    ("output_adv_single@lambda0.01", 2, 52.0, 0.01),
])


def test_gains_are_paired_per_seed():
    df = results.paired_gains(REF)
    adv = df[df["key"] == "advent"].set_index("seed")["gain"]
    assert adv.to_dict() == {0: 3.0, 1: 4.0, 2: 5.0}


def test_the_verdict_reads_the_signs_of_the_paired_gains_of_every_seed():
    assert results.verdict([2.5, 0.1, 3.0]) == "above the control on all 3 seeds"
    assert results.verdict([-0.1, -0.1, -0.1]) == "below the control on all 3 seeds"
    assert results.verdict([0.1, 0.1, -0.05]) == "no consistent difference (2 of 3 seeds above)"
    assert results.verdict([3.0]) == "one seed: not judged"
    assert results.verdict([3.0, float("nan")]) == "one seed: not judged"


def test_a_run_is_set_beside_the_reference():
    own = {"source_only": 61.0, "advent": 64.5, "minent": 62.0}
    table = results.against_reference(own, REF)
    adv = table.loc["AdvEnt"]
    assert adv["gain (this run)"] == pytest.approx(3.5)
    assert adv["reference gain"] == pytest.approx(4.0)
    assert adv["reference gain std"] == pytest.approx(1.0)
    assert adv["reference std"] == pytest.approx(np.std([63, 62, 67], ddof=1))
    assert adv["reference seeds"] == 3 and not np.isnan(adv["reference std"])
    assert adv["within reference range"]  # 3 <= 3.5 <= 5
    edge = results.against_reference({"source_only": 60.0, "advent": 65.1}, REF)
    assert edge.loc["AdvEnt", "within reference range"]  # 5.1 <= 5 + 0.1
    beyond = results.against_reference({"source_only": 60.0, "advent": 65.2}, REF)
    assert not beyond.loc["AdvEnt", "within reference range"]
    assert adv["verdict (this run)"] == "above the control"
    assert adv["verdict (reference)"] == "above the control on all 3 seeds"
    mi = table.loc["MinEnt"]
    assert mi["gain (this run)"] == pytest.approx(1.0)
    assert mi["reference gain std"] == pytest.approx(1.0408, abs=1e-4)
    assert mi["verdict (this run)"] == "above the control"  # +1.0 on this one seed
    assert mi["verdict (reference)"] == "no consistent difference (2 of 3 seeds above)"
    control = table.loc["source-only (control)"]
    assert control["gain (this run)"] == 0.0 and control["verdict (this run)"] == "the control"


def test_the_lambda_sweep_reads_the_row_and_its_variants():
    sweep = results.lambda_sweep(REF)
    assert sorted(set(sweep["lambda_adv_main"])) == [0.001, 0.01]
    means = sweep.groupby("lambda_adv_main")["gain"].mean()
    assert means[0.001] == pytest.approx(-1.0)  # 59-60, 57-58, 61-62
    assert means[0.01] == pytest.approx((-10 - 9 - 10) / 3)


def test_the_committed_reference_holds_three_seeds_of_every_row():
    ref = results.read_reference()
    for key in rows.adaptation() + ("oracle", rows.ensemble().key):
        assert sorted(ref.loc[ref["key"] == key, "seed"]) == [0, 1, 2], key
    sweep = results.lambda_sweep(ref)
    assert len(set(sweep["lambda_adv_main"])) == 3
    assert set(sweep.groupby("lambda_adv_main")["seed"].nunique()) == {3}
    starts = set(ref.loc[ref["key"] != "oracle", "start"].dropna())
    assert starts <= {"shipped:embedded_source_pretrain"}


def test_the_demo_table_sets_the_lowest_seed_beside_the_reference():
    mine = _runs([("source_only", 5, 61.0, 0.0), ("advent", 5, 61.5, 0.01),
                  ("advent", 6, 70.0, 0.01), ("source_only", 6, 60.0, 0.0)])
    table = results.beside_collected(mine, REF)
    assert list(table.index) == ["source-only (control)", "AdvEnt"]
    assert table.loc["AdvEnt", "gain (this run)"] == pytest.approx(0.5)  # seed 5: 61.5 - 61.0
    assert not table.loc["AdvEnt", "within reference range"]  # 0.5 < 3
    assert table.loc["AdvEnt", "verdict (this run)"] == "above the control"
    text = results.format_beside(table)
    assert "| AdvEnt | 61.5 | +0.5 | +4.0 +/- 1.0 (3) | no | above the control on all 3 seeds |" in text


def test_the_plots_draw_the_reference_and_this_run():
    import matplotlib

    matplotlib.use("Agg")
    from segda import viz

    table = results.against_reference({"source_only": 61.0, "advent": 64.5}, REF)
    fig = viz.plot_against_reference(table)
    ax = fig.axes[0]
    bars = [p.get_height() for p in ax.patches]
    assert bars == pytest.approx([0.0, 4.0])  # the reference's mean gains
    own = ax.collections[-1].get_offsets()[:, 1]
    assert list(own) == pytest.approx([0.0, 3.5])  # this run's gains
    labels = [t.get_text() for t in fig.legends[0].get_texts()]  # above the axes, off the bars
    assert "this notebook's run" in labels and "reference: mean of 3 seeds" in labels
    # the band the "within reference range" check uses is drawn: the seeds' range +/- 0.1
    band = [c for c in ax.collections if c.get_label().startswith("range checked")][0]
    ends = sorted(float(y) for seg in band.get_segments() for _, y in seg)
    gains = results.paired_gains(REF)
    g = gains[gains["key"] == "advent"]["gain"]
    assert min(ends) == pytest.approx(min(0.0 - 0.1, g.min() - 0.1))
    assert max(ends) == pytest.approx(max(0.0 + 0.1, g.max() + 0.1))

    sweep = results.lambda_sweep(REF)
    ax = viz.plot_lambda_sweep(sweep).axes[0]
    line = ax.get_lines()[0]
    assert list(line.get_xdata()) == [0.001, 0.01]
    assert list(line.get_ydata()) == pytest.approx([-1.0, -29 / 3])


def test_a_missing_reference_names_the_command_that_writes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="make suite"):
        results.read_reference(tmp_path / "none.csv")
