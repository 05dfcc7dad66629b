"""Wrong inputs typed as a user types them: each gives one `error:` line naming the input and
the fix (exit 1), and nothing is created."""

from pathlib import Path

import pytest

from segda import checkout, cli, config, errors, notebook, results

TINY = ["--set", "data.source_size=[64, 32]", "--set", "data.target_size=[64, 32]",
        "--set", "data.batch_size=2", "--set", "run.device=cpu", "--set", "run.progress=false"]


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _train(capsys, tmp_path, preset, *sets, extra=()):
    run_dir = tmp_path / "run"
    rc = cli.main(["train", preset, "--run-dir", str(run_dir), *TINY,
                   *[a for s in sets for a in ("--set", s)], *extra])
    out, err = capsys.readouterr()
    return rc, err, run_dir


@pytest.mark.parametrize("setting, key", [
    ("optim.early_stop=0", "optim.early_stop"),          # a paper preset too
    ("data.source_size=[0, 0]", "data.source_size"),
    ("data.target_size=[64, 0]", "data.target_size"),
    ("run.seed=-1", "run.seed"),
    ("optim.adam_betas=[1.5, 0.9]", "optim.adam_betas"),
    ("optim.disc_betas=[0.9, -0.1]", "optim.disc_betas"),
    ("run.device=gpu", "run.device"),
])
def test_a_wrong_value_names_its_key_and_creates_nothing(capsys, tmp_path, setting, key):
    rc, err, run_dir = _train(capsys, tmp_path, "paper/adaptsegnet_multi", setting)
    assert rc == 1 and key in _one_line_error(err)
    assert not run_dir.exists()


def test_cuda_on_a_machine_without_it_is_refused_before_the_folder(capsys, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc, err, run_dir = _train(capsys, tmp_path, "embedded/source_only", "run.device=cuda")
    line = _one_line_error(err)
    assert rc == 1 and "no CUDA device" in line and "run.device=cpu" in line
    assert not run_dir.exists()
    with pytest.raises(ValueError, match="device='cuda' but this machine has no CUDA"):
        notebook.notebook_config("embedded/source_only", device="cuda")


def test_a_negative_stop_at_is_refused(capsys, tmp_path):
    rc, err, run_dir = _train(capsys, tmp_path, "embedded/source_only", extra=["--stop-at", "-3"])
    assert rc == 1 and "--stop-at" in _one_line_error(err) and not run_dir.exists()


def test_an_empty_set_value_is_the_empty_string():
    assert config.parse_overrides(["model.init_checkpoint="]) == {"model.init_checkpoint": ""}
    assert config.load("embedded/advent", config.parse_overrides(
        ["model.init_checkpoint="])).model.init_checkpoint == ""


def test_collect_on_a_missing_path_says_it_does_not_exist(capsys, tmp_path):
    rc = cli.main(["collect", str(tmp_path / "nowhere")])
    line = _one_line_error(capsys.readouterr().err)
    assert rc == 1 and "does not exist" in line and "nowhere" in line


def test_readme_without_markers_is_one_line(tmp_path):
    readme = tmp_path / "R.md"
    readme.write_text("no markers here\n")
    with pytest.raises(results.ReadmeMarkersError, match="add the two lines"):
        results.write_readme_block(readme, "embedded", "table")
    assert readme.read_text() == "no markers here\n"


def test_a_changed_shipped_checkpoint_is_a_user_error():
    from segda import shipped

    assert issubclass(shipped.ShippedWeightsError, errors.UserError)


def test_image_size_given_as_text_by_papermill_is_read():
    cfg = notebook.notebook_config("embedded/source_only", image_size="[96, 48]")
    assert cfg.data.source_size == (96, 48) and cfg.data.target_size == (96, 48)
    with pytest.raises(config.ConfigError, match=r"parameter 'image_size' must be a list.*-y"):
        notebook.notebook_config("embedded/source_only", image_size="96")


def test_overrides_given_as_text_by_papermill_are_read():
    # papermill -p overrides '{"method.lambda_adv_main": 0.5}' passes the text
    cfg = notebook.notebook_config("embedded/output_adv_single",
                                   extra='{"method.lambda_adv_main": 0.5}')
    assert cfg.method.lambda_adv_main == 0.5
    with pytest.raises(config.ConfigError, match=r"parameter 'overrides' must be a dict.*-y"):
        notebook.notebook_config("embedded/output_adv_single", extra="[1, 2]")


def test_a_file_where_the_run_folder_should_be_is_one_line(tmp_path, capsys):
    (tmp_path / "taken").write_text("not a folder")
    argv = ["train", "embedded/source_only", "--run-dir", str(tmp_path / "taken" / "run"),
            "--set", "optim.max_iters=1", "--set", "optim.early_stop=1",
            "--set", "data.batch_size=1", "--set", "run.eval_max_images=1"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "taken" in err[0]


def test_one_of_the_two_image_sizes_changed_alone_names_both_keys(capsys, tmp_path):
    rc = cli.main(["train", "embedded/source_only", "--run-dir", str(tmp_path / "run"),
                   "--set", "data.source_size=[32,16]"])
    line = _one_line_error(capsys.readouterr().err)
    assert rc == 1 and "'data.source_size' [32, 16] and 'data.target_size' [128, 64]" in line
    assert "--set data.target_size=[W,H]" in line and not (tmp_path / "run").exists()
    # the real datasets take two sizes (the papers' 1280x720 and 1024x512)
    assert config.load("paper/advent", {"data.source_size": [640, 360]}).data.source_size == (640, 360)


def test_preset_names_and_numbers_in_another_notation(capsys, tmp_path):
    def error(*argv):
        assert cli.main(["train", *argv, "--run-dir", str(tmp_path / "run")]) == 1
        return _one_line_error(capsys.readouterr().err)

    assert "did you mean 'embedded/advent' or 'paper/advent'?" in error("advent")
    assert "did you mean 'embedded/advent'?" in error("embedded/advnt")
    assert "preset file nothere.yaml does not exist" in error("nothere.yaml")
    assert "'optim.max_iters' must be a whole number, got '1e3'; write it as 1000" in error(
        "embedded/advent", "--set", "optim.max_iters=1e3")
    assert "'run.amp' must be true or false, got 1" in error("embedded/advent", "--set", "run.amp=1")
    line = error("embedded/advent", "--set", "optim.early_stop=300", "--set", "optim.max_iters=200")
    assert "'optim.early_stop' (300) must not exceed 'optim.max_iters' (200)" in line
    assert "set optim.max_iters to at least 300" in line
    assert not (tmp_path / "run").exists()


def test_zero_images_is_refused_everywhere_with_the_parameter_named(capsys, tmp_path):
    import torch

    from segda import evaluate, step
    from segda.data import registry, stats

    with pytest.raises(config.ConfigError, match=r"parameter 'eval_images' must be at least 1 "
                                                 r"\(None: the whole split\), got 0"):
        notebook.notebook_config("embedded/advent", eval_images=0)
    cfg = notebook.notebook_config("embedded/advent", image_size=[64, 32], batch_size=2,
                                   device="cpu")
    assert cfg.run.eval_max_images == 0  # None: the config's value for the whole split
    data = registry.build_datasets(cfg.data, cfg.model)
    state = step.build_state(cfg, torch.device("cpu"))
    calls = {  # as the notebooks call them with max_images=eval_images
        "evaluate": lambda n: evaluate.evaluate(state.seg, data.val_target, max_images=n),
        "mean_entropy": lambda n: evaluate.mean_entropy(state.seg, data.val_target, max_images=n),
        "shares": lambda n: evaluate.predicted_class_shares(state.seg, data.val_target,
                                                            max_images=n),
        "scores": lambda n: evaluate.discriminator_scores(state.seg, state.discs["main"], "advent",
                                                          data.val_target, max_images=n),
    }
    for call in calls.values():
        with pytest.raises(evaluate.EvaluationError, match="max_images must be at least 1"):
            call(0)
    assert calls["scores"](1).size > 0 and calls["shares"](1).sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="max_items must be at least 1"):
        stats.class_frequencies(data.val_target, 0)
    assert cli.main(["ledger", str(tmp_path), "--max-images", "0"]) == 1
    assert "--max-images must be at least 1" in _one_line_error(capsys.readouterr().err)


def test_the_notebooks_default_run_dir_is_the_repositorys_wherever_the_kernel_starts(
        tmp_path, monkeypatch):
    repo = checkout.NOTEBOOKS_DIR.parent
    for kernel_cwd in (repo, repo / "notebooks", tmp_path):  # papermill, JupyterLab, elsewhere
        monkeypatch.chdir(kernel_cwd)
        assert notebook.run_root("../runs/notebooks") == repo / "runs" / "notebooks"
        assert notebook.run_folder("../runs/notebooks", "embedded/advent", 1) == \
            repo / "runs" / "notebooks" / "seed1" / "advent"
    assert notebook.run_root(tmp_path / "runs") == tmp_path / "runs"  # make demo, sweeps


def test_minent_cp_given_to_the_minent_notebook_trains_and_its_step_names_the_prior(tmp_path):
    """Notebook 05's calls with ``preset = "embedded/minent_cp"``: its rows train (the prior is
    computed from the source labels); the written-out step, which has no datasets, names the
    argument it needs."""
    import torch

    from segda import methods, step
    from segda.data import registry

    params = dict(image_size=[64, 32], batch_size=2, eval_images=2, device="cpu", seed=0)
    cfg = notebook.notebook_config("embedded/minent_cp", max_iters=1, **params)
    data = registry.build_datasets(cfg.data, cfg.model)
    trained = notebook.train_rows(  # the notebook's rows end with its preset: here twice
        [notebook.sibling("embedded/minent_cp", "minent_cp"), "embedded/minent_cp"],
        tmp_path, pretrain_iters=1, data=data, max_iters=1, **params)
    assert "cp_main" in trained["minent_cp"].history_frame()
    state = step.build_state(cfg, torch.device("cpu"))
    items = [data.train_source[i] for i in range(2)]
    src = methods.Batch(torch.stack([x["image"] for x in items]),
                        torch.stack([x["label"] for x in items]))
    tgt = methods.Batch(torch.stack([data.train_target[i]["image"] for i in range(2)]))
    with pytest.raises(ValueError, match=r"pass source_prior=torch.as_tensor\(data.source_prior"):
        step.train_step(state, src, tgt, cfg)
    prior = torch.full((19,), 1 / 19)  # any prior; data.source_prior() in a notebook
    assert "cp_main" in step.train_step(state, src, tgt, cfg, prior)


@pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")
def test_a_gta5_label_of_another_size_is_named_with_its_image_but_a_few_pixels_are_resized(
        tmp_path, capsys):
    import numpy as np

    from segda import doctor
    from segda.data import gta5, miniature
    from segda.data.real import SizeMismatchError

    mini = miniature.make_miniature(tmp_path / "data", init=False)
    lists = {"train": mini.lists["gta5_train"]}
    wrong = mini.gta5 / "labels" / "00002.png"  # a third of the 64x35 image, another ratio
    miniature.write_palette_png(wrong, np.full((20, 21), 7, np.uint8))
    sizes = f"{wrong} is 21x20 but its image {mini.gta5 / 'images' / '00002.png'} is 64x35"
    with pytest.raises(SizeMismatchError, match="extract these labels again") as err:
        gta5.prepare(mini.gta5, lists=lists, log=lambda s: None)
    assert sizes in str(err.value) and "--exclude-mismatched" in str(err.value)
    report = (mini.gta5 / "segda_prepare_report.json").read_text()
    assert '"00003.png"' in report  # the miniature's 2x1-pixel mismatch: resized, as before
    assert (mini.gta5 / "labels" / "00003_labelTrainIds.png").exists()
    with pytest.raises(SizeMismatchError, match="21x20 but its image"):  # the dataset loader
        gta5.GTA5(mini.gta5, size=None, list_file=lists["train"])
    argv = ["--dataset", "gta5", "--root", str(mini.gta5), "--list", str(lists["train"])]
    for extra in ([], ["--full"]):
        assert doctor.main([*argv, *extra]) == 1
        out = capsys.readouterr().out
        assert sizes in out and "--exclude-mismatched" in out and "not converted" not in out
    gta5.prepare(mini.gta5, lists=lists, exclude_mismatched=True, log=lambda s: None)
    assert len(gta5.GTA5(mini.gta5, size=None, list_file=lists["train"])) == 2


@pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")
def test_colour_saved_cityscapes_labels_get_the_fix_that_works(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from segda import doctor
    from segda.data import cityscapes as cs
    from segda.data import miniature
    from segda.data.real import DatasetError, read_list

    mini = miniature.make_miniature(tmp_path / "data", init=False)
    lists = {"train": mini.lists["cityscapes_train"], "val": mini.lists["cityscapes_val"]}
    argv = ["--dataset", "cityscapes", "--root", str(mini.cityscapes),
            *[a for k, v in lists.items() for a in ("--list", f"{k}={v}")]]

    def resave_in_colour(path):
        grey = np.asarray(Image.open(path))
        Image.fromarray(np.stack([grey] * 3, axis=-1)).save(path)

    val = [mini.cityscapes / "gtFine" / "val" / cs.stem(n) for n in read_list(lists["val"])]
    for stem in val:
        resave_in_colour(f"{stem}{cs.LABEL_IDS_SUFFIX}")
    assert doctor.main(argv) == 1
    out = capsys.readouterr().out
    assert f"{val[0]}{cs.LABEL_IDS_SUFFIX}: an 8-bit RGB PNG" in out
    assert "extract the *_gtFine_labelIds.png files again" in out and "--from-polygons" in out
    assert "make the labelIds single-channel first" in out  # not a bare rerun of prepare
    with pytest.raises(DatasetError, match="single-channel labelIds PNG.*--from-polygons"):
        cs.prepare(mini.cityscapes, lists=lists, log=lambda s: None)
    cs.prepare(mini.cityscapes, lists=lists, from_polygons=True, log=lambda s: None)
    # train-id labels saved again in colour: prepare keeps existing files unless --overwrite
    resave_in_colour(f"{val[0]}{cs.TRAIN_IDS_SUFFIX}")
    assert doctor.main(argv) == 1
    assert "--overwrite (prepare writes these files" in capsys.readouterr().out
    cs.prepare(mini.cityscapes, lists=lists, from_polygons=True, overwrite=True,
               log=lambda s: None)
    assert doctor.main(argv) == 0


def test_wrong_starting_weights_and_data_folders_are_refused_before_the_run_folder(
        capsys, tmp_path):
    cases = {
        ("embedded/advent", "model.init_checkpoint=nothere.pth"): "init checkpoint not found: "
                                                                   "nothere.pth",
        ("embedded/advent", "model.init_checkpoint=shipped:nothere"): "no shipped weights named "
                                                                       "'nothere'",
        ("paper/advent", "model.init_checkpoint=", f"data.root={tmp_path}"):
            f"gta5 root not found: {tmp_path / 'GTA5'}",
        ("paper/oracle", "model.init_checkpoint=", f"data.root={tmp_path}"):  # no source read
            f"cityscapes root not found: {tmp_path / 'Cityscapes'}",
    }
    for (preset, *sets), expected in cases.items():
        rc, err, run_dir = _train(capsys, tmp_path, preset, *sets)
        assert rc == 1 and expected in _one_line_error(err) and not run_dir.exists()


def test_wrong_names_of_files_runs_and_options_are_one_line(capsys, tmp_path):
    def error(*argv):
        assert cli.main(list(argv)) == 1
        return _one_line_error(capsys.readouterr().err)

    missing = tmp_path / "nothere.pth"
    assert error("eval", "--checkpoint", str(missing)) == f"error: checkpoint not found: {missing}"
    assert "nowhere does not exist; give run folders" in error("ledger", str(tmp_path / "nowhere"))
    assert error("collect", str(tmp_path)).startswith(f"error: no finished runs under {tmp_path}")
    root = str(tmp_path / "variants")
    assert "variant trains embedded presets, not paper/advent" in error(
        "variant", "paper/advent", "--name", "x", "--run-root", root)
    assert "--name advent is a row of the main table" in error(
        "variant", "embedded/advent", "--name", "advent", "--run-root", root)
    assert "did you mean 'embedded/advent'?" in error(
        "variant", "embedded/advnt", "--name", "x", "--run-root", root)
    assert not (tmp_path / "variants").exists()
    assert "-p expects key=value, got 'max_iters'" in error(
        "sweep", "--notebook", "nb.ipynb", "--out", root, "--presets", "embedded/minent",
        "-p", "max_iters")
    assert "--adapt-set expects key=value" in error("suite", "--run-root", root, "--adapt-set", "x")
    from segda.data.real import CountMismatchError

    assert issubclass(CountMismatchError, errors.UserError)  # a dataset's error, one line


def test_eval_names_the_model_a_checkpoint_holds_and_takes_shipped_weights(capsys, tmp_path):
    import shutil

    from segda import shipped

    copy = tmp_path / "weights.pth"
    shutil.copy(shipped.resolve(shipped.reference()), copy)
    assert cli.main(["eval", "--checkpoint", str(copy), "--out", str(tmp_path)]) == 1
    assert "holds weights of the 'small' model" in _one_line_error(capsys.readouterr().err)
    assert cli.main(["eval", "--checkpoint", shipped.reference(), "--model", "small",
                     "--max-images", "1", "--device", "cpu", "--out", str(tmp_path)]) == 0
    assert "embedded_source_pretrain" in capsys.readouterr().out


def test_the_doctor_runs_as_a_command_and_names_an_unknown_split(capsys, tmp_path):
    assert cli.main(["doctor", "--dataset", "gta5", "--root", str(tmp_path / "none")]) == 1
    assert "gta5 root does not exist" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["doctor", "--dataset", "cityscapes", "--root", str(tmp_path), "--list", "foo=x"])
    assert "'foo' is not a split of this dataset; its splits are train, val" in \
        capsys.readouterr().err
    from segda.data import synthia
    from segda.data.real import CountMismatchError

    with pytest.raises(CountMismatchError) as err:
        synthia.prepare(tmp_path, log=lambda s: None)
    assert "0 unpaired)" in str(err.value)  # no empty "e.g."
    from segda.data import miniature

    (tmp_path / "taken").write_text("a file")
    with pytest.raises(FileExistsError, match="taken is a file; give a new folder"):
        miniature.make_miniature(tmp_path / "taken", init=False)  # make_miniature.py: one line


def test_every_error_a_user_can_cause_is_one_class():
    """The command line catches ``errors.UserError`` (and the built-in errors of a user's files):
    every error class it reports in one line subclasses it, keeping its usual base."""
    from segda import checkpointing, cluster, evaluate, io, repro, runs, shipped, trainlog
    from segda.data.real import DatasetError
    from segda.models.checkpoints import CheckpointMismatchError

    reported = (config.ConfigError, checkpointing.CheckpointError, io.DiskFullError,
                runs.RunFileError, runs.RunLockedError, runs.ConfigMismatchError,
                trainlog.NonFiniteLossError, evaluate.EvaluationError, CheckpointMismatchError,
                cli.CommandLineError, repro.DeviceError, shipped.ShippedWeightsError,
                results.ReadmeMarkersError, DatasetError, cluster.ClusterError)
    assert all(issubclass(e, errors.UserError) for e in reported)
    assert issubclass(config.ConfigError, ValueError) and issubclass(io.DiskFullError, OSError)
    assert set(errors.CAUSED_BY_USER) == {errors.UserError, FileNotFoundError, PermissionError,
                                          FileExistsError, NotADirectoryError, IsADirectoryError}


def test_the_command_line_stays_thin():
    """cli.py parses arguments and calls the library: at most 400 lines."""
    lines = len(Path(cli.__file__).read_text().splitlines())
    assert lines <= 400, f"cli.py has {lines} lines; move what is not argument parsing into the library"
