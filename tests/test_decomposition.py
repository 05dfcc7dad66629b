"""The statistics rows: AdaBN of the control (``adabn``) and of every row's final model
(``<row>+adabn``), scored on the images their rows were scored on."""

import json

import pytest

from segda import adabn, decomposition, evaluate, experiments, results, rows, runs, train
from segda.data import registry

TINY = {"data.source_size": [64, 32], "data.target_size": [64, 32], "data.batch_size": 2,
        "optim.max_iters": 2, "optim.early_stop": 2, "run.device": "cpu", "run.progress": False,
        "run.eval_max_images": 4, "method.disc_ndf": 8}


def test_names_and_labels_of_the_statistics_rows():
    assert decomposition.derived_name("source_only") == "adabn"
    assert decomposition.derived_name("advent") == "advent+adabn"
    assert rows.label("adabn") == "AdaBN (target statistics, no training)"
    assert rows.label("advent+adabn") == "AdvEnt + AdaBN"
    assert rows.label("advent+minent+adabn") == "AdvEnt + MinEnt (ensemble) + AdaBN"
    # the training-mode row can no longer be read as AdaBN
    assert "AdaBN" not in rows.label("source_only_tgt_bn")
    assert rows.table_order().index("adabn") == rows.table_order().index("source_only") + 1


@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("decomposition")
    experiments.run_seed(root, 0, presets=("source_only", "minent", "advent"), adapt_overrides=TINY,
                         pretrain_overrides=TINY, oracle=False)
    return root


def _written(root, folder):
    return json.loads((root / "seed0" / folder / runs.METRICS).read_text())["evals"][-1]


def test_every_row_gets_its_statistics_row_on_the_same_images(seed_runs):
    found = set(runs.collect(seed_runs)["run"])
    assert found == {f"seed0/{k}" for k in ("source_only", "minent", "advent", "advent+minent",
                                            "adabn", "minent+adabn", "advent+adabn",
                                            "advent+minent+adabn")}
    control = train.load_run(seed_runs / "seed0" / "source_only")
    data = registry.build_datasets(control.config.data, control.config.model)
    stats = adabn.adapt_batch_norm(control.seg, data.train_target, max_images=200)
    # the weights stay the control's; only the statistics move
    assert adabn.same_parameters(stats, control.seg)
    four = evaluate.evaluate(stats, data.val_target, max_images=4, device="cpu").miou
    every = evaluate.evaluate(stats, data.val_target, device="cpu").miou
    assert four != every  # so the next line tells which images were scored
    assert _written(seed_runs, "adabn")["target_miou"] == pytest.approx(four, abs=1e-12)


def test_the_ensembles_statistics_row_sums_the_adapted_members(seed_runs):
    members = [train.load_run(seed_runs / "seed0" / m) for m in ("advent", "minent")]
    data = registry.build_datasets(members[0].config.data, members[0].config.model)
    adapted = [adabn.adapt_batch_norm(m.seg, data.train_target, max_images=200) for m in members]
    direct = evaluate.evaluate(adapted, data.val_target, weights=[0.5, 0.5], max_images=4,
                               device="cpu")
    assert _written(seed_runs, "advent+minent+adabn")["target_miou"] == pytest.approx(
        direct.miou, abs=1e-12)


def test_tables_pair_every_row_with_both_statistics_rows(seed_runs):
    table = results.summarize(runs.collect(seed_runs))
    m = {k: 100 * _written(seed_runs, k)["target_miou"] for k in ("advent", "adabn")}
    assert table.loc["AdvEnt", "gain vs AdaBN"] == pytest.approx(m["advent"] - m["adabn"])
    assert "| gain vs AdaBN | gain vs training-mode BN |" in results.format_table(table)
    # the trained rows, the ensemble and the statistics rows: all on the runs' 4 images
    assert results.images_note(runs.collect(seed_runs)).strip() == (
        "Every row is scored on the first 4 validation images of each domain.")


def test_statistics_rows_rebuilds_the_rows_from_disk(seed_runs, tmp_path):
    import shutil

    shutil.copytree(seed_runs / "seed0" / "source_only", tmp_path / "seed0" / "source_only")
    scored = experiments.statistics_rows(tmp_path, 0)
    assert list(scored) == ["adabn"]
    assert scored["adabn"] == pytest.approx(100 * _written(seed_runs, "adabn")["target_miou"])
    with pytest.raises(runs.RunFileError, match="no finished control run"):
        experiments.statistics_rows(tmp_path / "elsewhere", 0)


def test_a_notebooks_comparison_pairs_rows_with_both_statistics_rows(seed_runs):
    from segda import notebook

    trained = {k: train.load_run(seed_runs / "seed0" / k) for k in ("source_only", "advent")}
    data = registry.build_datasets(trained["advent"].config.data, trained["advent"].config.model)
    table = notebook.compare(trained, data)
    adabn_label = rows.label("adabn")
    # the AdaBN row is the control's statistics on 200 target images, scored on its 4 images
    assert table.loc[adabn_label, "target mIoU"] == pytest.approx(
        round(100 * _written(seed_runs, "adabn")["target_miou"], 2), abs=0.006)
    gain = table.loc["AdvEnt", "target mIoU"] - table.loc[adabn_label, "target mIoU"]
    assert table.loc["AdvEnt", "gain vs AdaBN"] == pytest.approx(gain, abs=0.011)
    # without data there is no AdaBN row, and no training-mode row was trained here
    assert list(notebook.compare(trained).columns) == ["target mIoU", "source mIoU", "gain vs source-only"]


def test_a_statistics_row_is_read_back_only_when_written_from_the_same_runs(seed_runs, monkeypatch):
    control = train.load_run(seed_runs / "seed0" / "source_only")
    data = registry.build_datasets(control.config.data, control.config.model)
    seed_dir = seed_runs / "seed0"
    written = _written(seed_runs, "adabn")

    def no_statistics(*args, **kwargs):
        raise AssertionError("the stored row should have been read")

    with monkeypatch.context() as patch:
        patch.setattr(decomposition, "_adapted", no_statistics)
        again = decomposition.posthoc_entry(seed_dir, "source_only", [control], ["source_only"], data)
    assert again == written
    # another number of statistics images is another row: computed afresh (and rewritten)
    other = decomposition.posthoc_entry(seed_dir, "source_only", [control], ["source_only"], data,
                                        images=8)
    stats = adabn.adapt_batch_norm(control.seg, data.train_target, max_images=8)
    assert other["target_miou"] == pytest.approx(
        evaluate.evaluate(stats, data.val_target, max_images=4, device="cpu").miou, abs=1e-12)
    # so is a control trained further (another final iteration)
    control.state.iteration += 1
    with monkeypatch.context() as patch:
        patch.setattr(decomposition, "_adapted", no_statistics)
        with pytest.raises(AssertionError, match="should have been read"):
            decomposition.posthoc_entry(seed_dir, "source_only", [control], ["source_only"], data,
                                        images=8)
    # without a folder nothing is written
    control.state.iteration -= 1
    decomposition.posthoc_entry(None, "source_only", [control], ["source_only"], data)
    assert _written(seed_runs, "adabn")["target_miou"] == other["target_miou"]
