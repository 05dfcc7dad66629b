"""Weights registry and checked download, on local files only (file:// URLs, no network)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import urllib.request
from pathlib import Path

import pytest

from segda import io, weights
from segda.weights import ChecksumMismatchError, WeightSpec, WeightsUnavailableError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any non-file URL fails loudly: these tests must never touch the network."""
    real_urlopen = urllib.request.urlopen

    def guarded(req, *args, **kwargs):
        url = req.full_url if isinstance(req, urllib.request.Request) else str(req)
        if not url.startswith("file:"):
            raise AssertionError(f"test tried the network: {url}")
        return real_urlopen(req, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)


def blob(tmp_path: Path, content: bytes, name: str = "src.bin") -> tuple[Path, str]:
    path = tmp_path / name
    path.write_bytes(content)
    return path, hashlib.sha256(content).hexdigest()


def spec_for(url: str, filename: str, name: str = "test") -> WeightSpec:
    return WeightSpec(name, filename, (url,), "test file", "test", "alive")


def test_prefix_from_filename():
    assert weights.expected_prefix_from_filename("DeepLab_resnet_pretrained_init-f81d91e8.pth") \
        == "f81d91e8"
    assert weights.expected_prefix_from_filename("cityscapes_oracle-b7b9934.pth") == "b7b9934"
    assert weights.expected_prefix_from_filename("DeepLab_resnet_pretrained_imagenet.pth") is None
    assert weights.expected_prefix_from_filename("gta2cityscapes_advent.pth") is None


def test_registry_matches_the_fact_sheet():
    w = weights.WEIGHTS
    assert w["deeplab_init_asn"].expected_prefix == "f81d91e8"
    assert w["asn_gta2cityscapes_multi"].expected_prefix == "ed35151c"
    assert w["asn_gta2cityscapes_vgg"].expected_prefix == "ac4ac9f6"
    for spec in w.values():
        assert spec.status in {"dead", "alive", "unknown", "unconfirmed"}
        if any("ucmerced.edu/ytsai" in u or "DA_Seg_models" in u for u in spec.urls):
            assert spec.status == "dead"
        if any("github.com/valeoai/ADVENT/releases" in u for u in spec.urls):
            assert spec.status == "alive"
        assert weights.instructions(spec.name)
    assert "torchvision_resnet101_to_deeplab" in weights.instructions("deeplab_init_asn")


def test_verify_local_file(tmp_path):
    path, digest = blob(tmp_path, b"weights")
    assert weights.verify(path, digest[:8]) == digest
    assert weights.verify(path, None) == digest
    with pytest.raises(ChecksumMismatchError, match="does not start with"):
        weights.verify(path, "00000000" if not digest.startswith("0") else "ffffffff")


def test_fetch_downloads_and_checks(tmp_path):
    src, digest = blob(tmp_path, b"good weights")
    spec = spec_for(src.as_uri(), f"model-{digest[:8]}.pth")
    out = weights.fetch(spec, tmp_path / "w", log=lambda s: None)
    assert out == tmp_path / "w" / spec.filename and out.read_bytes() == b"good weights"
    assert weights.fetch(spec, tmp_path / "w", log=lambda s: None) == out  # present: no download


def test_fetch_mismatch_keeps_file_aside(tmp_path):
    src, digest = blob(tmp_path, b"not the file you want")
    wrong = "0" * 8 if not digest.startswith("0") else "f" * 8
    spec = spec_for(src.as_uri(), f"model-{wrong}.pth")
    with pytest.raises(ChecksumMismatchError, match="not used"):
        weights.fetch(spec, tmp_path / "w", log=lambda s: None)
    assert not (tmp_path / "w" / spec.filename).exists()
    rejected = list((tmp_path / "w" / "rejected").iterdir())
    assert len(rejected) == 1 and rejected[0].read_bytes() == b"not the file you want"


def test_existing_corrupt_file_is_moved_aside(tmp_path):
    wdir = tmp_path / "w"
    wdir.mkdir()
    spec = weights.WEIGHTS["deeplab_init_asn"]
    (wdir / spec.filename).write_bytes(b"truncated download")
    with pytest.raises(ChecksumMismatchError, match="f81d91e8"):
        weights.fetch(spec, wdir, log=lambda s: None)
    assert not (wdir / spec.filename).exists() and any((wdir / "rejected").iterdir())


def test_dead_link_gives_instructions(tmp_path):
    dead = dataclasses.replace(weights.WEIGHTS["deeplab_init_asn"],
                               urls=((tmp_path / "gone.pth").as_uri(),))
    with pytest.raises(WeightsUnavailableError) as err:
        weights.fetch(dead, tmp_path / "w", log=lambda s: None)
    text = str(err.value)
    assert "gone.pth" in text and "deeplab_init_advent" in text
    assert "torchvision_resnet101_to_deeplab" in text
    assert not list((tmp_path / "w").glob(f".*{io.TEMP_SUFFIX}"))  # no temporary left
    no_url = weights.WEIGHTS["advent_gta2cityscapes_minent_er"]
    with pytest.raises(WeightsUnavailableError, match="no URL is known"):
        weights.fetch(no_url, tmp_path / "w", log=lambda s: None)


def test_cli_verify(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("dw", REPO / "data_scripts/download_weights.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    path, _ = blob(tmp_path, b"something else")
    assert cli.main(["--verify", str(path), "--name", "deeplab_init_asn"]) == 1
    assert "f81d91e8" in capsys.readouterr().err
    assert cli.main(["--list"]) == 0 and "deeplab_init_advent" in capsys.readouterr().out
