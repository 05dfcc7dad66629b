"""The table of rows: a method registered outside the package with its row appears in the
README's table, in the ledger under its own official snapshot names and in the demo's table
beside the reference; the table's lookups and the one decision of where a row starts."""

import pandas as pd
import pytest
import torch.nn.functional as F

from segda import cli, config, ledger, losses, methods, results, rows, starts, train
from segda.data import registry


def max_square_terms(method, cfg, out, discs):
    prob = F.softmax(losses.upcast(out.main), dim=1)
    return {"maxsq_main": cfg.lambda_ent_main * -(prob**2).sum(1).mean() / 2}


@pytest.fixture
def maxsquare(monkeypatch):
    """MaxSquare, a method trained by ADVENT's code, registered with its row; both tables are
    restored afterwards."""
    monkeypatch.setattr(methods, "METHODS", dict(methods.METHODS))
    monkeypatch.setattr(rows, "ROWS", dict(rows.ROWS))
    methods.register(methods.Method("maxsquare", "max_square", paper="Chen et al., ICCV 2019",
                                    target_loss=max_square_terms))
    return rows.register(rows.Row("maxsquare", "MaxSquare", embedded="maxsquare",
                                  snapshots="advent"))


def _collected(values):
    """A table shaped as runs.collect returns it: (row, seed, target mIoU)."""
    return pd.DataFrame([{
        "run": f"seed{s}/{k}", "method": k, "levels": "multi", "train_on": "source", "seed": s,
        "iterations": 10, "target_miou": v, "source_miou": 80.0, "wall_time_s": 5.0,
        "torch": "2.x", "cpu": "a CPU", "threads": 1, "gpu": "", "lambda_adv_main": 0.0,
        "start": "shipped:x",
    } for k, s, v in values])


COLLECTED = _collected([
    ("source_only_tgt_bn", 0, 60.0), ("source_only_tgt_bn", 1, 62.0),
    ("source_only", 0, 47.0), ("source_only", 1, 49.0),
    ("maxsquare", 0, 63.0), ("maxsquare", 1, 66.0),
    ("maxsquare@400it", 0, 70.0),  # a variant: not a row of the main table
])


def test_a_registered_row_is_in_the_readme_table(maxsquare):
    text = results.results_block(COLLECTED)
    # mean (63 + 66) / 2 = 64.5, sample std 1.5 * sqrt(2) = 2.12; gains over the same seed's
    # source-only (the control) 16 and 17 (16.5), over the batch-norm row (AdaBN) 3 and 4 (3.5)
    # no AdaBN row among these runs: its column says so
    assert "| MaxSquare | 64.5 +/- 2.1 | 80.0 | +16.5 | - | +3.5 | 2 |" in text
    assert "6 runs over seeds [0, 1]" in text  # the variant is left out
    lines = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| ")]
    assert lines[1:] == ["| source-only (control)", "| training-mode BN on target (no target loss)",
                         "| MaxSquare"]


def test_a_registered_row_is_beside_the_reference_in_the_demo_table(maxsquare):
    # reference gains of MaxSquare over the control: 15, 16, 17 (mean 16, std 1)
    ref = _collected([("source_only", s, 45.0 + 2 * s) for s in range(3)]
                     + [("maxsquare", s, 60.0 + 3 * s) for s in range(3)])
    ref["key"] = rows.keys(ref)
    beside = results.beside_collected(COLLECTED, ref)
    assert list(beside.index) == ["source-only (control)", "training-mode BN on target (no target loss)",
                                  "MaxSquare"]
    mine = beside.loc["MaxSquare"]
    assert mine["this run"] == 63.0 and mine["gain (this run)"] == 16.0  # seed 0: 63 - 47
    assert mine["reference gain"] == 16.0 and mine["reference gain std"] == pytest.approx(1.0)
    assert mine["within reference range"]
    assert mine["verdict (reference)"] == "above the control on all 3 seeds"


def test_a_row_declaring_advents_naming_gets_advents_snapshot_names(maxsquare):
    cfg = config.load("embedded/minent", {"method.name": "maxsquare", "optim.early_stop": 5})
    assert ledger.official_name(cfg, 3) == "model_2"
    assert ledger.official_name(cfg, 5) == "model_4"  # no AdaptSegNet exception at the stop
    rows.register(rows.Row("maxsquare", "MaxSquare", embedded="maxsquare"), replace=True)
    assert ledger.official_name(cfg, 3) == "GTA5_2"
    assert ledger.official_name(cfg, 5) == "GTA5_5"


def test_the_ledger_names_a_registered_rows_snapshots_and_its_table(maxsquare, tmp_path, capsys,
                                                                    tiny_embedded):
    cfg = config.load("embedded/minent", {
        "method.name": "maxsquare", "data.source_size": [64, 32], "data.target_size": [64, 32],
        "data.batch_size": 2, "optim.max_iters": 2, "optim.early_stop": 2, "run.device": "cpu",
        "run.progress": False, "run.eval_every": 0, "run.eval_max_images": 2,
        "run.checkpoint_every": 1, "run.keep_snapshots": True,
    })
    train.fit(cfg, tmp_path / "seed0" / "maxsquare", data=registry.build_datasets(cfg.data, cfg.model))
    assert cli.main(["ledger", str(tmp_path), "--out", str(tmp_path), "--max-images", "2",
                     "--device", "cpu"]) == 0
    capsys.readouterr()
    snaps = pd.read_csv(tmp_path / ledger.SNAPSHOTS_CSV)
    assert sorted(zip(snaps["updates"], snaps["official"])) == [(1, "model_0"), (2, "model_1")]
    assert "### MaxSquare (maxsquare)" in (tmp_path / ledger.TABLE_MD).read_text()


def test_lookups_at_both_scales():
    assert rows.find("adaptsegnet_single").key == "output_adv_single"
    assert rows.find("minent_vgg_cp").key == "minent_cp"
    assert rows.find("advent@400it") is None and rows.label("advent@400it") == "advent@400it"
    assert rows.preset_of("minent_cp", "paper") == "paper/minent_vgg_cp"
    assert rows.key_of_preset("paper/adaptsegnet_multi") == "output_adv_multi"
    assert rows.key_of("seed2/advent") == "advent"
    assert rows.ensemble().members == ("advent", "minent") and rows.control() == "source_only"
    assert rows.adaptation() == ("source_only", "source_only_tgt_bn", "feature_adv",
                                 "output_adv_single", "output_adv_multi", "minent", "minent_cp",
                                 "advent")
    assert rows.baselines() == ("AdaBN (target statistics, no training)",
                                "training-mode BN on target (no target loss)", "oracle (target-trained)")
    for name in ("adaptsegnet_lsgan_single", "adaptsegnet_vgg_single", "advent_vgg_cp"):
        assert rows.preset_of(name, "paper") in config.list_presets()


def test_register_refuses_a_key_twice_and_unknown_members(monkeypatch):
    monkeypatch.setattr(rows, "ROWS", dict(rows.ROWS))
    with pytest.raises(ValueError, match="exists"):
        rows.register(rows.Row("advent", "AdvEnt again"))
    with pytest.raises(ValueError, match="members.*dann"):
        rows.register(rows.Row("advent+dann", "ensemble", members=("advent", "dann")))
    with pytest.raises(ValueError, match="snapshots"):
        rows.Row("x", "X", snapshots="gta")


def test_one_decision_of_where_a_row_starts():
    assert starts.starts_from("embedded/advent", "shipped") == "shipped"
    assert starts.starts_from("embedded/advent", "train") == "own"
    assert starts.starts_from("embedded/oracle", "train") == "preset"
    assert starts.starts_from("embedded/source_pretrain") == "preset"
    assert starts.starts_from("paper/advent") == "preset"
    with pytest.raises(config.ConfigError, match="pretrained must be"):
        starts.starts_from("embedded/oracle", "imagenet")
