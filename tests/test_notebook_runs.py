"""Notebook runs are found by their configuration: a changed parameter trains a new run beside
the old one instead of refusing the folder, and the old parameters find the old run again."""

import pytest

from segda import checkout, notebook, runs

# pretrained="train": these tests follow the pretraining runs a notebook trains itself.
TINY = dict(image_size=[64, 32], batch_size=2, eval_images=2, device="cpu", seed=0,
            pretrained="train")


def test_a_changed_parameter_trains_a_new_run_and_the_old_one_is_found_again(tmp_path):
    first = notebook.train_preset("embedded/source_only", tmp_path, pretrain_iters=2,
                                  max_iters=2, **TINY)
    assert first.run_dir == tmp_path / "seed0" / "source_only"
    assert first.wall_time_s > 0  # trained

    longer = notebook.train_preset("embedded/source_only", tmp_path, pretrain_iters=2,
                                   max_iters=3, **TINY)
    expected = f"source_only-{runs.config_hash(longer.config)}"
    assert longer.run_dir == tmp_path / "seed0" / expected
    assert longer.state.iteration == 3 and longer.wall_time_s > 0

    again = notebook.train_preset("embedded/source_only", tmp_path, pretrain_iters=2,
                                  max_iters=2, **TINY)
    assert again.run_dir == first.run_dir and again.wall_time_s == 0.0  # reused, not retrained
    assert again.state.iteration == 2


def test_a_changed_pretraining_gets_its_own_warm_start(tmp_path):
    a = notebook.train_preset("embedded/minent", tmp_path, pretrain_iters=2, max_iters=1, **TINY)
    b = notebook.train_preset("embedded/minent", tmp_path, pretrain_iters=3, max_iters=1, **TINY)
    init_a, init_b = a.config.model.init_checkpoint, b.config.model.init_checkpoint
    assert init_a.endswith("seed0/source_pretrain/last.pth")
    assert "source_pretrain-" in init_b and init_a != init_b
    assert b.run_dir.name.startswith("minent-")  # its config differs by the warm start


def test_training_shows_a_text_progress_bar_when_asked(tmp_path, capsys):
    notebook.train_preset("embedded/source_only", tmp_path, pretrain_iters=2, max_iters=2,
                          progress_bar="text", **TINY)
    err = capsys.readouterr().err
    assert "source_pretrain" in err or "source_only" in err
    assert "2/2" in err  # tqdm's plain-text bar: iterations done / total, left on screen
    again = notebook.train_preset("embedded/source_only", tmp_path, pretrain_iters=2, max_iters=2,
                                  progress_bar="none", **TINY)
    assert again.wall_time_s == 0.0 and "2/2" not in capsys.readouterr().err  # reused: no bar


def test_an_unknown_progress_bar_is_refused(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="progress_bar must be one of"):
        notebook.train_preset("embedded/oracle", tmp_path, pretrain_iters=1, max_iters=1,
                              progress_bar="fancy", **{**TINY, "seed": 99})


def test_by_default_adaptation_starts_from_the_shipped_checkpoint(tmp_path):
    tiny = {**TINY, "pretrained": "shipped"}
    run = notebook.train_preset("embedded/minent", tmp_path, max_iters=1, **tiny)
    assert run.config.model.init_checkpoint == "shipped:embedded_source_pretrain"
    assert not (tmp_path / "seed0" / "source_pretrain").exists()  # nothing pretrained here


def test_the_shipped_checkpoint_refuses_another_model(tmp_path):
    import pytest

    from segda import config

    with pytest.raises(config.ConfigError, match='pretrained = "train"'):
        notebook.train_preset("embedded/minent", tmp_path, max_iters=1,
                              **{**TINY, "pretrained": "shipped", "model": "deeplab_vgg16"})


def test_an_unknown_starting_point_is_refused(tmp_path):
    import pytest

    from segda import config

    with pytest.raises(config.ConfigError, match="'shipped' or 'train'"):
        notebook.train_preset("embedded/minent", tmp_path, max_iters=1,
                              **{**TINY, "pretrained": "pretrained"})


def test_reuse_rows_reads_finished_runs_and_trains_nothing(tmp_path):
    tiny = {**TINY, "pretrained": "shipped"}
    assert notebook.reuse_rows(["embedded/minent"], tmp_path, max_iters=1, **tiny) == {}
    assert not (tmp_path / "seed0" / "minent").exists()  # nothing trained, no folder written
    trained = notebook.train_rows(["embedded/minent"], tmp_path, max_iters=1, **tiny)["minent"]
    found = notebook.reuse_rows(["embedded/minent", "embedded/advent"], tmp_path, max_iters=1,
                                **tiny)
    assert list(found) == ["minent"] and found["minent"].run_dir == trained.run_dir
    assert found["minent"].wall_time_s == 0.0  # reused
    # another config (more iterations) is another run: not found
    assert notebook.reuse_rows(["embedded/minent"], tmp_path, max_iters=2, **tiny) == {}
    # a pretraining of its own that is missing: nothing found, and the pretraining not trained
    own = {**TINY, "pretrained": "train"}
    assert notebook.reuse_rows(["embedded/minent"], tmp_path, max_iters=1, pretrain_iters=2,
                               **own) == {}
    assert not (tmp_path / "seed0" / "source_pretrain").exists()


def test_a_method_notebook_given_another_methods_preset_stops_at_its_setup(tmp_path):
    """papermill notebooks/05_minent.ipynb -p preset embedded/advent: one line at the setup
    cell, before anything trains, naming both methods and where to run the preset."""
    import papermill

    out = tmp_path / "05.ipynb"
    with pytest.raises(papermill.PapermillExecutionError) as failed:
        papermill.execute_notebook(
            str(checkout.NOTEBOOKS_DIR / "05_minent.ipynb"), str(out),
            parameters={"preset": "embedded/advent", "run_dir": str(tmp_path / "runs"),
                        "interactive": False},
            cwd=str(checkout.NOTEBOOKS_DIR), progress_bar=False)
    assert failed.value.ename == "ConfigError"
    assert ("preset embedded/advent trains the method 'advent', but this notebook writes out and "
            "plots 'minent'") in failed.value.evalue
    assert not (tmp_path / "runs").exists()  # nothing trained, no folder made
