"""``python -m segda.doctor --full`` decodes every file and names every bad one, on the
miniature datasets with damaged files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segda import doctor
from segda.data import checks, gta5, miniature, synthia
from segda.data import cityscapes as cs
from segda.data.real import BitDepthError, read_list

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


@pytest.fixture
def mini(tmp_path) -> miniature.Miniature:
    mini = miniature.make_miniature(tmp_path / "data", init=False)
    gta5.prepare(mini.gta5, lists={"train": mini.lists["gta5_train"]}, log=lambda s: None)
    cs.prepare(mini.cityscapes, lists={"train": mini.lists["cityscapes_train"],
                                       "val": mini.lists["cityscapes_val"]}, log=lambda s: None)
    synthia.prepare(mini.synthia, lists={"train": mini.lists["synthia_train"]}, log=lambda s: None)
    return mini


def args(mini, dataset: str) -> list[str]:
    lists = {"gta5": [str(mini.lists["gta5_train"])],
             "synthia": [str(mini.lists["synthia_train"])],
             "cityscapes": [f"train={mini.lists['cityscapes_train']}",
                            f"val={mini.lists['cityscapes_val']}"]}[dataset]
    root = {"gta5": mini.gta5, "cityscapes": mini.cityscapes, "synthia": mini.synthia}[dataset]
    return ["--dataset", dataset, "--root", str(root), *[x for v in lists for x in ("--list", v)]]


def test_full_decodes_every_file(mini, capsys, monkeypatch):
    bars = []
    real_tqdm = checks.tqdm

    def recording_tqdm(iterable, **kw):  # the progress bar sees every file
        bars.append((kw["desc"], len(iterable)))
        return real_tqdm(iterable, **kw)

    monkeypatch.setattr(checks, "tqdm", recording_tqdm)
    for dataset in ("gta5", "cityscapes", "synthia"):
        assert doctor.main([*args(mini, dataset), "--full"]) == 0
    out = capsys.readouterr().out
    assert f"images in {mini.gta5 / 'images'}: 4/4 files decode as 8-bit images" in out
    assert "val gtFine labelIds: 3/3 files decode as 8-bit single-channel labels" in out
    assert f"labels in {mini.synthia / 'GT' / 'LABELS'}: 3/3 files decode as 16-bit labels" in out
    assert ("decoding converted train-id labels", 4) in bars and len(bars) == 3 + 6 + 3


def test_full_names_every_bad_file(mini, capsys):
    images, labels = mini.gta5 / "images", mini.gta5 / "labels"
    rgb16 = np.full((35, 64, 3), 40000, dtype=np.uint16)
    miniature.write_png16(images / "00002.png", rgb16)  # 16-bit where 8-bit is expected
    data = (images / "00004.png").read_bytes()
    (images / "00004.png").write_bytes(data[: len(data) // 2])  # truncated
    Image.fromarray(np.zeros((35, 64, 3), np.uint8)).save(labels / "00003_labelTrainIds.png")
    assert doctor.main(args(mini, "gta5")) == 0  # the quick check decodes only the first pair
    capsys.readouterr()
    assert doctor.main([*args(mini, "gta5"), "--full"]) == 1
    out = capsys.readouterr().out
    assert f"{images / '00002.png'}: a 16-bit RGB PNG where an 8-bit one is expected" in out
    assert f"cannot decode {images / '00004.png'}" in out
    assert (f"{labels / '00003_labelTrainIds.png'}: an 8-bit RGB PNG where a single-channel "
            "(grey or palette) label is expected") in out
    assert f"images in {images}: 2/4 files decode" in out
    assert out.count("fix: extract the file again from its archive") == 3
    # loading the 16-bit image names it too
    ds = gta5.GTA5(mini.gta5, size=None, list_file=mini.lists["gta5_train"])
    with pytest.raises(BitDepthError, match=r"00002\.png: a 16-bit PNG where an 8-bit image"):
        ds[1]


def test_full_on_cityscapes_and_synthia(mini, capsys):
    val = read_list(mini.lists["cityscapes_val"])[1]
    bad = mini.cityscapes / "gtFine/val" / (cs.stem(val) + cs.LABEL_IDS_SUFFIX)
    bad.write_bytes(bad.read_bytes()[:60])
    assert doctor.main([*args(mini, "cityscapes"), "--full"]) == 1
    assert f"cannot decode {bad}" in capsys.readouterr().out
    colour = mini.synthia / "GT/LABELS/0000001.png"  # an 8-bit colour label, as in GT/COLOR
    Image.fromarray(np.zeros((38, 64, 3), np.uint8)).save(colour)
    assert doctor.main([*args(mini, "synthia"), "--full"]) == 0  # a warning, as the quick check
    out = capsys.readouterr().out
    assert f"[warn]    {colour}: an 8-bit RGB PNG where a 16-bit label is expected" in out
