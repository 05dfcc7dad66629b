"""The shipped oracle run: notebook 01's oracle at its defaults, copied instead of trained when a
row's config is exactly its own, checked by SHA-256, and scoring what the three-seed reference's
own seed-0 oracle (trained separately by `make suite`) scored."""

import ast
import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from segda import evaluate, notebook, runs, shipped, starts, train

REPO = Path(__file__).resolve().parents[1]
NAME = shipped.SHIPPED_RUNS["embedded/oracle"]


def notebook01_oracle_config():
    """The oracle's config as notebook 01 builds it at its defaults: its parameters cell, its
    setup cell, and the rule that a row trained from scratch runs pretrain_iters iterations."""
    nb = json.loads((REPO / "notebooks" / "01_source_only.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    p = {t.id: ast.literal_eval(n.value) for n in ast.parse("".join(cell["source"])).body
         for t in n.targets}
    _, _, _, params = notebook.setup(
        p["preset"], p["run_dir"], max_iters=p["max_iters"], dataset=p["dataset"],
        data_root=p["data_root"], model=p["model"], batch_size=p["batch_size"],
        image_size=p["image_size"], eval_images=p["eval_images"], device=p["device"],
        seed=p["seed"], amp=p["amp"], overrides=p["overrides"])
    extra = dict(params.pop("extra", None) or {})
    return notebook.notebook_config("embedded/oracle", extra=extra,
                                    **{**params, "max_iters": p["pretrain_iters"]})


def test_the_shipped_run_is_notebook_01s_oracle_at_its_defaults():
    cfg = notebook01_oracle_config()
    assert starts.shipped_run_for("embedded/oracle", cfg) == NAME
    record = shipped.entry(NAME)
    assert (record["preset"], record["seed"], record["iterations"]) == ("embedded/oracle", 0, 500)
    for file, path in shipped.run_files(NAME).items():  # digests, independently of io.sha256
        assert hashlib.sha256(path.read_bytes()).hexdigest() == record["sha256"][file]
    # another seed or length is not the shipped run: it trains
    assert starts.shipped_run_for("embedded/oracle", cfg.replace({"run.seed": 1})) is None
    shorter = cfg.replace({"optim.max_iters": 400, "optim.early_stop": 400})
    assert starts.shipped_run_for("embedded/oracle", shorter) is None


def test_it_scores_what_the_references_seed_0_oracle_scored():
    """The reference (lib/segda/reference/embedded_runs.csv) trained its seed-0 oracle in its own
    run; the shipped run is notebook 01's. Same config, same score."""
    ref = pd.read_csv(REPO / "lib" / "segda" / "reference" / "embedded_runs.csv")
    row = ref[ref["run"] == "seed0/oracle"].iloc[0]
    record = shipped.entry(NAME)
    assert 100 * record["target_miou"] == pytest.approx(row["target_miou"], abs=0.01)
    assert 100 * record["source_miou"] == pytest.approx(row["source_miou"], abs=0.01)


def test_installed_it_is_a_finished_run_whose_checkpoint_gives_its_scores(tmp_path):
    cfg = notebook01_oracle_config()
    folder = tmp_path / "seed0" / "oracle"
    assert starts.install_shipped_run("embedded/oracle", folder, cfg) == NAME
    assert runs.is_complete(folder, cfg)
    assert starts.install_shipped_run("embedded/oracle", folder, cfg) is None  # already there
    result = train.ensure_run(folder, cfg)  # reused, not trained
    assert result.state.iteration == 500
    from segda.data import registry

    data = registry.build_datasets(cfg.data, cfg.model)
    miou = evaluate.evaluate(result.seg, data.val_target,
                             evaluate.Predictor.from_config(cfg), device="cpu").miou
    assert miou == pytest.approx(shipped.entry(NAME)["target_miou"], abs=1e-6)


def test_a_row_of_another_config_or_a_changed_file_is_never_installed(tmp_path):
    cfg = notebook01_oracle_config()
    other = cfg.replace({"run.seed": 1})
    assert starts.install_shipped_run("embedded/oracle", tmp_path / "seed1", other) is None
    assert not (tmp_path / "seed1").exists()
    # a copy of the package's shipped folder with one byte of the checkpoint changed
    folder = tmp_path / "shipped_weights"
    shutil.copytree(shipped.FOLDER / NAME, folder / NAME)
    shutil.copy(shipped.MANIFEST, folder / "manifest.json")
    blob = bytearray((folder / NAME / "last.pth").read_bytes())
    blob[-10] ^= 0xFF
    (folder / NAME / "last.pth").write_bytes(bytes(blob))
    with pytest.raises(shipped.ShippedWeightsError, match="last.pth is not the shipped run"):
        shipped.run_files(NAME, manifest=folder / "manifest.json")


def test_notebook_rows_copy_it_and_say_so(tmp_path, capsys, monkeypatch):
    """train_rows at notebook 01's defaults installs the shipped oracle (and says so) instead
    of training it; pretrained="train" trains it (not run here: 500 iterations)."""
    cfg = notebook01_oracle_config()
    fits, original = [], train.fit
    monkeypatch.setattr(train, "fit", lambda *a, **k: fits.append(a) or original(*a, **k))
    result = notebook.train_preset("embedded/oracle", tmp_path, pretrained="shipped",
                                   pretrain_iters=500, progress_bar="none", max_iters=200,
                                   dataset="embedded", data_root=cfg.data.root, seed=0,
                                   device="auto", eval_images=None, amp=False)
    assert fits == [] and result.state.iteration == 500
    assert torch.equal(next(iter(result.seg.state_dict().values())),
                       next(iter(train.load_run(shipped.FOLDER / NAME).seg.state_dict().values())))
    said = capsys.readouterr().out
    assert "shipped with segda (embedded_oracle" in said and 'pretrained="train"' in said
