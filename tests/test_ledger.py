"""The snapshot ledger: official snapshot names, last iterate vs best snapshot over seeds
(values checked by hand), and the command on small runs (each snapshot's mIoU equals a direct
evaluation of that file)."""

import math

import pandas as pd
import pytest
import torch

from segda import checkpointing, cli, config, evaluate, ledger, rows, train
from segda.data import registry
from segda.labels import CLASS_NAMES


def test_official_names_hold_the_same_number_of_updates():
    advent = config.load("paper/advent")
    assert advent.optim.early_stop == 120001
    # train_advent: model_i is saved after the update of index i, i.e. after i + 1 updates
    assert ledger.official_name(advent, 120001) == "model_120000"
    assert ledger.official_name(advent, 2000) == "model_1999"
    assert ledger.official_name(config.load("paper/minent"), 120000) == "model_119999"
    asn = config.load("paper/adaptsegnet_multi")
    # AdaptSegNet: GTA5_i after i + 1 updates, but its final GTA5_150000 after 150,000
    assert ledger.official_name(asn, 5001) == "GTA5_5000"
    assert ledger.official_name(asn, 5000) == "GTA5_4999"
    assert ledger.official_name(asn, 150000) == "GTA5_150000"


def test_rows_and_papers_numbers_follow_the_config():
    assert rows.row_of(config.load("paper/adaptsegnet_vgg_single")) == "output_adv_single"
    assert ledger.papers_number(config.load("paper/adaptsegnet_vgg_single"))[0] == 35.0
    assert ledger.papers_number(config.load("paper/advent"))[0] == 43.8
    assert rows.row_of(config.load("paper/oracle")) == "oracle"
    assert rows.row_of(config.load("paper/minent_vgg_cp")) == "minent_cp"
    assert ledger.papers_number(config.load("paper/minent_vgg_cp")) is None  # SYNTHIA row
    assert ledger.papers_number(config.load("paper/adaptsegnet_lsgan_single")) is None


def _snaps(rows):
    """Snapshot rows as evaluate_snapshots writes them, mIoU given, per-class = mIoU."""
    out = []
    for seed, updates, miou, last in rows:
        out.append({"run": f"r{seed}", "seed": seed, "snapshot": f"iter_{updates:06d}.pth",
                    "updates": updates, "official": f"model_{updates - 1}", "images": 5,
                    "last": last, "miou": miou, **{f"iou_{c}": miou for c in CLASS_NAMES}})
    return pd.DataFrame(out)


def test_last_best_and_spread_over_seeds_by_hand():
    cfg = config.load("paper/advent")
    snaps = _snaps([(0, 2000, 30.0, False), (0, 4000, 50.0, False), (0, 4001, 40.0, True),
                    (1, 2000, 44.0, False), (1, 4000, 25.0, False), (1, 4001, 44.0, True)])
    table = ledger.summarize_set(snaps, "advent", cfg).set_index(["row", "seed"])
    # last iterates 40 and 44: mean 42, sample std sqrt(2 * 2**2 / 1) = 2.828
    assert table.loc[("last", "0"), "miou"] == 40.0 and table.loc[("last", "1"), "miou"] == 44.0
    assert table.loc[("last", "mean"), "miou"] == 42.0
    assert table.loc[("last", "std"), "miou"] == pytest.approx(math.sqrt(8))
    # best: 50 at 4000 updates (model_3999) for seed 0; seed 1 ties 44 at 2000 and 4001, the
    # earlier snapshot wins; mean 47, std sqrt(2 * 3**2) = 4.243
    assert table.loc[("best", "0"), "official"] == "model_3999"
    assert table.loc[("best", "1"), "updates"] == 2000
    assert table.loc[("best", "mean"), "miou"] == 47.0
    assert table.loc[("best", "std"), "miou"] == pytest.approx(math.sqrt(18))
    assert table.loc[("best", "std"), "iou_road"] == pytest.approx(math.sqrt(18))
    assert table.loc[("papers", ""), "miou"] == 43.8
    assert table.loc[("papers", ""), "iou_road"] == 89.9
    text = ledger.format_set(table.reset_index(), snaps, "advent", cfg)
    assert "| 42.00 +/- 2.83 |" in text and "| 47.00 +/- 4.24 |" in text
    assert "50.00 (iter_004000.pth, 4000 updates = official model_3999)" in text
    assert "43.8 |" in text


def _tiny(seed: int):
    return config.load("embedded/advent", {
        "data.source_size": [64, 32], "data.target_size": [64, 32], "data.batch_size": 2,
        "optim.max_iters": 10, "optim.early_stop": 3, "method.disc_ndf": 8,
        "run.device": "cpu", "run.progress": False, "run.eval_every": 0,
        "run.eval_max_images": 4, "run.checkpoint_every": 2, "run.keep_snapshots": True,
        "run.seed": seed,
    })


def test_ledger_command_on_runs_over_seeds(tmp_path, capsys, monkeypatch):
    data = registry.build_datasets(_tiny(0).data, _tiny(0).model)
    for seed in (0, 1):
        train.fit(_tiny(seed), tmp_path / f"seed{seed}" / "advent", data=data)
    # settings that leave the weights alone do not split a set; the training settings do
    other = _tiny(2).replace({"run.eval_every": 1, "run.progress": True})
    assert ledger.run_sets([tmp_path / "seed0" / "advent", tmp_path / "seed1" / "advent"]) == [
        [tmp_path / "seed0" / "advent", tmp_path / "seed1" / "advent"]]
    assert other.replace(ledger.NOT_TRAINING) == _tiny(0).replace(ledger.NOT_TRAINING)
    assert _tiny(0).replace({"optim.lr": 1.0, **ledger.NOT_TRAINING}) != other.replace(
        ledger.NOT_TRAINING)
    assert cli.main(["ledger", str(tmp_path), "--max-images", "6", "--device", "cpu"]) == 0
    assert "| last iterate (segda's number) |" in capsys.readouterr().out
    snaps = pd.read_csv(tmp_path / ledger.SNAPSHOTS_CSV)
    # iter_000002.pth and last.pth (3 updates) per seed
    assert sorted(zip(snaps["seed"], snaps["updates"])) == [(0, 2), (0, 3), (1, 2), (1, 3)]
    assert set(snaps["official"]) == {"model_1", "model_2"}
    for row in snaps.itertuples():
        blob = torch.load(row.file, map_location="cpu", weights_only=True)
        seg, _ = checkpointing.segmenter_from_run(blob)
        direct = evaluate.evaluate(seg, data.val_target, device="cpu", max_images=6)
        assert row.miou == pytest.approx(100 * direct.miou, abs=1e-9)
    table = pd.read_csv(tmp_path / ledger.TABLE_CSV)
    last = table[(table["row"] == "last") & (table["seed"].isin(["0", "1"]))]
    assert list(last["updates"]) == [3, 3]
    mean = table[(table["row"] == "last") & (table["seed"] == "mean")]["miou"].item()
    assert mean == pytest.approx(last["miou"].mean())
    assert "iou_road" in table.columns
    # a second call reuses every evaluation (the files are unchanged)

    def no_evaluation(*args, **kwargs):
        raise AssertionError("an unchanged snapshot was evaluated again")

    monkeypatch.setattr(ledger.evaluate, "evaluate", no_evaluation)
    assert cli.main(["ledger", str(tmp_path), "--max-images", "6", "--device", "cpu"]) == 0
    pd.testing.assert_frame_equal(snaps, pd.read_csv(tmp_path / ledger.SNAPSHOTS_CSV))
