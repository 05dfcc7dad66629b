"""The shipped source-only checkpoint: verified by SHA-256 on every load, refused when it is
not the manifest's file, and reproducible: regenerating its first training iterations gives the
losses the manifest recorded when the file was made, and evaluating it gives its scores."""

import hashlib
import json
import shutil

import pytest
import torch

from segda import checkpointing, config, evaluate, models, shipped, shipping
from segda.data import registry


@pytest.fixture(scope="module")
def record():
    return shipped.entry(shipped.EMBEDDED_PRETRAINED)


def test_the_file_is_the_one_the_manifest_names(record):
    path = shipped.FOLDER / record["file"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()  # independent of io.sha256
    assert digest == record["sha256"]
    assert shipped.resolve(shipped.reference()) == path
    assert record["command"].startswith("python -m segda ship")


def test_a_changed_file_is_refused_with_both_digests(record, tmp_path):
    folder = tmp_path / "shipped_weights"
    folder.mkdir()
    shutil.copy(shipped.MANIFEST, folder / "manifest.json")
    blob = bytearray((shipped.FOLDER / record["file"]).read_bytes())
    blob[-10] ^= 0xFF
    (folder / record["file"]).write_bytes(bytes(blob))
    with pytest.raises(shipped.ShippedWeightsError) as err:
        shipped.resolve(shipped.reference(), manifest=folder / "manifest.json")
    message = str(err.value)
    assert record["sha256"] in message and str(folder / record["file"]) in message
    assert "python -m segda ship" in message

    (folder / record["file"]).unlink()
    with pytest.raises(shipped.ShippedWeightsError, match="missing"):
        shipped.resolve(shipped.reference(), manifest=folder / "manifest.json")
    with pytest.raises(shipped.ShippedWeightsError, match="known"):
        shipped.resolve("shipped:no_such_weights")


def test_a_config_names_it_and_training_starts_from_it(record):
    cfg = config.load("embedded/minent", {"model.init_checkpoint": shipped.reference()})
    seg = models.build_segmenter(cfg.model.name, cfg.model.num_classes, cfg.model.multi_level,
                                 cfg.model.aspp_branches)
    checkpointing.load_segmenter_weights(seg, cfg.model.init_checkpoint)
    weights = torch.load(shipped.FOLDER / record["file"], weights_only=True)
    assert all(torch.equal(v, weights[k]) for k, v in seg.state_dict().items())


def test_evaluating_it_gives_the_manifest_scores(record):
    cfg = config.load(record["preset"], {"run.seed": record["seed"]})
    data = registry.build_datasets(cfg.data, cfg.model)
    seg = models.build_segmenter(cfg.model.name, cfg.model.num_classes, cfg.model.multi_level,
                                 cfg.model.aspp_branches)
    checkpointing.load_segmenter_weights(seg, shipped.reference())
    res = evaluate.evaluate([seg], data.val_target, device="cpu")
    assert abs(res.miou - record["target_miou"]) < 5e-4  # other CPUs may flip a few pixels


def test_regenerating_the_first_iterations_matches_the_manifest(record):
    again = shipping.first_losses(record["seed"], len(record["first_losses"]))
    assert len(again) == len(record["first_losses"]) == shipping.FINGERPRINT_ITERATIONS
    for mine, theirs in zip(again, record["first_losses"], strict=True):
        assert mine["iteration"] == theirs["iteration"]
        for key, value in theirs.items():
            assert mine[key] == pytest.approx(value, rel=shipping.FINGERPRINT_RTOL), key


def test_the_manifest_is_plain_json_with_what_made_the_file(record):
    text = shipped.MANIFEST.read_text()
    assert json.loads(text)[shipped.EMBEDDED_PRETRAINED] == record
    for key in ("preset", "seed", "iterations", "model", "target_miou", "source_miou", "torch"):
        assert key in record


def test_the_check_command_verifies_and_regenerates(capsys):
    from segda import cli

    assert cli.main(["ship", "--check"]) == 0
    out = capsys.readouterr().out
    assert "SHA-256 matches the manifest" in out and "first 5 iterations regenerated" in out


def test_the_readme_check_command_runs():
    import re
    import shlex
    from pathlib import Path

    from segda import cli

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"<!-- segda:commands shipped -->\n```\n(.*?)```", readme, re.S)
    assert block, "README.md lost its shipped-checkpoint command block"
    for line in block.group(1).splitlines():
        words = shlex.split(line)
        assert words[:3] == ["python", "-m", "segda"], line
        assert cli.main(words[3:]) == 0, line
