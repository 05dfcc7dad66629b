"""The official models rebuilt in segda match the official code: keys, shapes, counts, quirks.

Reference manifests were measured from the official sources (see
``shared/reference/official_facts.md``). The ResNet-101 has 44.6 M parameters, so structural
checks run on the meta device and numerical ones on small CPU inputs.
"""

from __future__ import annotations

import json
import math
import pickle
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segda.models import build_discriminator
from segda.models.checkpoints import (
    CheckpointMismatchError,
    aspp_branches_for,
    detect_kind,
    load_checkpoint,
    load_state_dict_checked,
    torchvision_resnet101_to_deeplab,
)
from segda.models.deeplabv2 import DeepLabV2ResNet101
from segda.models.vgg import DeepLabVGG16


def _find_reference_dir() -> Path:
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "reference" / "state_dict"
        if candidate.is_dir():
            return candidate
    pytest.skip("shared/reference/state_dict not found", allow_module_level=True)


MANIFESTS = _find_reference_dir()


def _manifest(name: str) -> list[tuple[str, list[int]]]:
    data = json.loads((MANIFESTS / f"manifest_{name}.json").read_text())
    return [(k, list(shape)) for k, shape in data["state_dict"]]


def _summary() -> dict:
    return json.loads((MANIFESTS / "manifest_summary.json").read_text())


def _keys_shapes(model: nn.Module) -> list[tuple[str, list[int]]]:
    return [(k, list(v.shape)) for k, v in model.state_dict().items()]


@pytest.fixture(scope="module")
def meta_multi() -> DeepLabV2ResNet101:
    with torch.device("meta"):
        return DeepLabV2ResNet101(multi_level=True)


@pytest.fixture(scope="module")
def cpu_multi() -> DeepLabV2ResNet101:
    torch.manual_seed(0)
    return DeepLabV2ResNet101(multi_level=True)


@pytest.fixture(scope="module")
def scratch_multi() -> DeepLabV2ResNet101:
    """A second CPU model that the checkpoint tests overwrite (keeps ``cpu_multi`` pristine)."""
    torch.manual_seed(1)
    return DeepLabV2ResNet101(multi_level=True)


def _caffe_logit_size(n: int) -> int:
    """Logit size along one axis: stem conv (k7 s2 p3), ceil-mode pool (k3 s2 p1), layer2 (s2)."""
    n = (n + 2 * 3 - 7) // 2 + 1
    pooled = math.ceil((n + 2 * 1 - 3) / 2) + 1
    if (pooled - 1) * 2 >= n + 1:  # PyTorch drops a ceil-mode window starting in the padding
        pooled -= 1
    return (pooled - 1) // 2 + 1


# ---------------------------------------------------------------- structure (meta device)


@pytest.mark.parametrize(
    ("multi_level", "manifest"),
    [(True, "advent_deeplabv2_multi"), (False, "advent_deeplabv2_single")],
)
def test_resnet_state_dict_equals_official(multi_level, manifest):
    with torch.device("meta"):
        model = DeepLabV2ResNet101(multi_level=multi_level)
    assert _keys_shapes(model) == _manifest(manifest)
    # AdaptSegNet's DeeplabMulti has the same keys, order and shapes as ADVENT's model.
    if multi_level:
        assert _keys_shapes(model) == _manifest("adaptsegnet_deeplab_multi")


def test_vgg_state_dict_equals_official():
    with torch.device("meta"):
        model = DeepLabVGG16(multi_level=False)
    assert _keys_shapes(model) == _manifest("adaptsegnet_deeplab_vgg")
    assert len(model.state_dict()) == 38


def test_vgg_rejects_multi_level():
    with pytest.raises(ValueError, match="single-level"):
        DeepLabVGG16(multi_level=True)


def test_fc_discriminator_equals_advent():
    disc = build_discriminator("output", 19)
    assert _keys_shapes(disc) == _manifest("advent_fc_discriminator")


def test_parameter_counts(meta_multi):
    summary = _summary()
    info = summary["advent_deeplabv2_multi"]
    params = list(meta_multi.parameters())
    assert sum(p.numel() for p in params) == info["num_params_total"] == 44_601_560
    frozen = sum(p.numel() for p in params if not p.requires_grad)
    assert frozen == info["num_params_frozen"] == 105_344
    with torch.device("meta"):
        single = DeepLabV2ResNet101(multi_level=False)
        vgg = DeepLabVGG16()
    n_single = sum(p.numel() for p in single.parameters())
    assert n_single == summary["advent_deeplabv2_single"]["num_params_total"]
    n_vgg = sum(p.numel() for p in vgg.parameters())
    assert n_vgg == summary["adaptsegnet_deeplab_vgg"]["num_params_total"]
    disc = build_discriminator("output", 19)
    n_disc = sum(p.numel() for p in disc.parameters())
    assert n_disc == summary["advent_fc_discriminator"]["num_params_total"]


def test_bn_affine_frozen_and_official_init(cpu_multi):
    bns = [m for m in cpu_multi.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 104
    for bn in bns:
        assert not bn.weight.requires_grad and not bn.bias.requires_grad
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    convs = [m for m in cpu_multi.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.requires_grad for c in convs)
    w = cpu_multi.layer3[5].conv2.weight
    assert abs(w.std().item() - 0.01) < 5e-4 and abs(w.mean().item()) < 5e-4


def test_optimizer_1x_group_duplicates(meta_multi):
    """The official 1x group yields each backbone tensor once per ancestor module."""
    entries = [
        p
        for root in meta_multi.backbone_roots()
        for m in root.modules()
        for p in m.parameters()
        if p.requires_grad
    ]
    info = _summary()["advent_deeplabv2_multi"]["optimizer_groups"]
    assert len(entries) == info["group_1x_entries_yielded"] == 314
    counts = Counter(id(p) for p in entries)
    assert len(counts) == info["group_1x_unique_tensors"] == 104
    assert Counter(counts.values()) == {1: 1, 3: 99, 4: 4}
    unique = {id(p): p for p in entries}.values()
    assert sum(p.numel() for p in unique) == info["group_1x_unique_elements"]
    head = [p for root in meta_multi.head_roots() for p in root.parameters()]
    assert len(head) == info["group_10x_entries"] == 16
    assert sum(p.numel() for p in head) == info["group_10x_elements"]


@pytest.mark.parametrize(("size", "logits"), [
    ((512, 1024), (65, 129)), ((720, 1280), (91, 161)), ((1024, 2048), (129, 257)),
])
def test_resnet_output_sizes_full_resolution(meta_multi, size, logits):
    assert tuple(_caffe_logit_size(n) for n in size) == logits
    out = meta_multi(torch.empty(1, 3, *size, device="meta"))
    assert tuple(out.main.shape) == (1, 19, *logits)
    assert tuple(out.aux.shape) == (1, 19, *logits)


@pytest.mark.parametrize(("size", "logits"), [((512, 1024), (64, 128)), ((720, 1280), (90, 160))])
def test_vgg_output_sizes(size, logits):
    with torch.device("meta"):
        model = DeepLabVGG16()
        out = model(torch.empty(1, 3, *size))
    assert tuple(out.main.shape) == (1, 19, *logits)
    assert out.aux is None
    assert out.features.shape[1] == model.feature_channels == 1024
    assert out.aux_features.shape[1] == model.aux_feature_channels == 512


def test_roots(meta_multi):
    m = meta_multi
    assert m.backbone_roots() == [m.conv1, m.bn1, m.layer1, m.layer2, m.layer3, m.layer4]
    assert m.head_roots() == [m.layer5, m.layer6]
    with torch.device("meta"):
        single = DeepLabV2ResNet101(multi_level=False)
        vgg = DeepLabVGG16()
    assert single.head_roots() == [single.layer6] and not hasattr(single, "layer5")
    assert vgg.backbone_roots() == [vgg.features] and vgg.head_roots() == [vgg.classifier]


# ---------------------------------------------------------------- numerics (small CPU inputs)


def _branch_sum(head, x: torch.Tensor, n: int) -> torch.Tensor:
    """Independent head computation from the raw conv weights."""
    return sum(
        F.conv2d(x, c.weight, c.bias, padding=c.dilation, dilation=c.dilation)
        for c in list(head.conv2d_list)[:n]
    )


def test_forward_small_input_and_aspp_sum(cpu_multi):
    x = torch.randn(1, 3, 65, 129)
    with torch.no_grad():
        out = cpu_multi(x)
    h, w = _caffe_logit_size(65), _caffe_logit_size(129)
    assert (h, w) == (9, 17)
    assert tuple(out.main.shape) == (1, 19, h, w) and tuple(out.aux.shape) == (1, 19, h, w)
    assert tuple(out.features.shape) == (1, 2048, h, w)
    assert tuple(out.aux_features.shape) == (1, 1024, h, w)
    with torch.no_grad():
        main_ref = _branch_sum(cpu_multi.layer6, out.features, 4)
        aux_ref = _branch_sum(cpu_multi.layer5, out.aux_features, 4)
    torch.testing.assert_close(out.main, main_ref)
    torch.testing.assert_close(out.aux, aux_ref)


def test_aspp_two_branches_is_adaptsegnet_sum():
    torch.manual_seed(1)
    model = DeepLabV2ResNet101(multi_level=True, aspp_branches=2, bn_mode="frozen")
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 41, 41))
        main2 = _branch_sum(model.layer6, out.features, 2)
        main4 = _branch_sum(model.layer6, out.features, 4)
    torch.testing.assert_close(out.main, main2)
    torch.testing.assert_close(out.aux, _branch_sum(model.layer5, out.aux_features, 2))
    assert not torch.allclose(out.main, main4)


def _running_stats(model: nn.Module) -> list[torch.Tensor]:
    return [
        t.clone() for m in model.modules() if isinstance(m, nn.BatchNorm2d)
        for t in (m.running_mean, m.running_var)
    ]


def test_bn_mode_frozen_keeps_running_stats():
    model = DeepLabV2ResNet101(multi_level=False, bn_mode="frozen")
    for _ in range(2):  # as constructed, then after an explicit .train()
        before = _running_stats(model)
        with torch.no_grad():
            model(torch.randn(1, 3, 33, 33))
        after = _running_stats(model)
        assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
        model.train()
    assert model.training and not model.bn1.training


def test_bn_mode_train_updates_running_stats(cpu_multi):
    cpu_multi.train()
    before = _running_stats(cpu_multi)
    with torch.no_grad():
        cpu_multi(torch.randn(1, 3, 33, 33))
    after = _running_stats(cpu_multi)
    assert cpu_multi.bn1.training
    assert not torch.equal(before[0], after[0])  # bn1.running_mean moved


def test_vgg_forward_small():
    torch.manual_seed(0)
    model = DeepLabVGG16(aspp_branches=2)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
        assert tuple(out.main.shape) == (1, 19, 8, 12)
        torch.testing.assert_close(out.main, _branch_sum(model.classifier, out.features, 2))


# ---------------------------------------------------------------- checkpoints


def _official_init_state_dict(prefix: str) -> dict[str, torch.Tensor]:
    """A random file in the DeepLab init's format: backbone plus a 2048-channel ``layer5``,
    no ``num_batches_tracked`` (PyTorch 0.3)."""
    g = torch.Generator().manual_seed(3)
    sd = {
        prefix + k: torch.randn(shape, generator=g)
        for k, shape in _manifest("advent_deeplabv2_single")
        if not k.startswith("layer6.") and not k.endswith("num_batches_tracked")
    }
    for i in range(4):
        sd[f"{prefix}layer5.conv2d_list.{i}.weight"] = torch.randn(21, 2048, 3, 3, generator=g)
        sd[f"{prefix}layer5.conv2d_list.{i}.bias"] = torch.randn(21, generator=g)
    return sd


@pytest.mark.parametrize("prefix", ["Scale.", ""])
def test_load_official_init(scratch_multi, tmp_path, prefix):
    sd = _official_init_state_dict(prefix)
    path = tmp_path / "DeepLab_resnet_pretrained_init-f81d91e8.pth"
    torch.save(sd, path)
    heads = {
        k: v.clone() for k, v in scratch_multi.state_dict().items()
        if k.startswith(("layer5.", "layer6."))
    }
    report = load_checkpoint(scratch_multi, path)  # auto-detected
    assert report.kind == "init"
    assert sorted(report.dropped) == sorted(k for k in sd if k.startswith(prefix + "layer5."))
    assert len(report.dropped) == 8
    after = scratch_multi.state_dict()
    for k, v in heads.items():
        assert torch.equal(after[k], v), f"head {k} was overwritten"
    for k, v in sd.items():
        name = k.removeprefix(prefix)
        if not name.startswith("layer5."):
            assert torch.equal(after[name], v), name
    assert set(report.kept_init) == set(heads) | {k for k in after if "num_batches" in k}


def test_load_init_requires_every_backbone_key(scratch_multi, tmp_path):
    sd = _official_init_state_dict("Scale.")
    del sd["Scale.layer3.7.conv2.weight"]
    path = tmp_path / "init.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointMismatchError, match=r"layer3\.7\.conv2\.weight"):
        load_checkpoint(scratch_multi, path, kind="init")


def test_load_adapted_strict(scratch_multi, tmp_path):
    saved = {k: v.clone() for k, v in scratch_multi.state_dict().items()}
    # PyTorch-0.3 releases lack num_batches_tracked, and some files wrap the state_dict.
    legacy = {k: v for k, v in saved.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "gta2cityscapes_advent.pth"
    torch.save({"state_dict": legacy, "iteration": torch.tensor(120000)}, path)
    with torch.no_grad():
        for p in scratch_multi.parameters():
            p.add_(1.0)
    report = load_checkpoint(scratch_multi, path)
    assert report.kind == "adapted" and report.ok and not report.dropped
    assert len(report.loaded) == 640 - 104
    for k, v in scratch_multi.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, saved[k]), k


def test_load_adaptsegnet_discriminator_names(tmp_path):
    asn_names = [k for k, _ in _manifest("adaptsegnet_fc_discriminator")]
    g = torch.Generator().manual_seed(5)
    sd = {k: torch.randn(s, generator=g) for k, s in _manifest("adaptsegnet_fc_discriminator")}
    path = tmp_path / "GTA5_150000_D2.pth"
    torch.save(sd, path)
    disc = build_discriminator("output", 19)
    report = load_checkpoint(disc, path)
    assert report.kind == "discriminator" and report.ok
    mapped = dict(zip(asn_names, [k for k, _ in _manifest("advent_fc_discriminator")], strict=True))
    for asn, adv in mapped.items():
        assert torch.equal(disc.state_dict()[adv], sd[asn])
    # ADVENT's own names load as they are, also when wrapped under "model".
    torch.save({"model": disc.state_dict(), "iter": 120000}, tmp_path / "model_D_main.pth")
    assert load_checkpoint(disc, tmp_path / "model_D_main.pth").kind == "discriminator"


def test_mismatch_lists_missing_unexpected_and_shapes(tmp_path):
    disc = build_discriminator("output", 19)
    sd = dict(disc.state_dict())
    del sd["4.bias"]
    sd["9.weight"] = torch.zeros(1)
    sd["2.weight"] = torch.zeros(128, 64, 3, 3)
    path = tmp_path / "broken_disc.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(disc, path, kind="discriminator")
    msg = str(info.value)
    assert isinstance(info.value, RuntimeError)
    for needle in (str(path), "missing keys (1): 4.bias", "unexpected keys (1): 9.weight",
                   "2.weight: checkpoint [128, 64, 3, 3] vs model [128, 64, 4, 4]"):
        assert needle in msg
    report = load_checkpoint(disc, path, kind="discriminator", strict=False)
    assert report.missing == ["4.bias"] and report.unexpected == ["9.weight"]
    assert len(report.shape_mismatches) == 1 and "2.weight" not in report.loaded


def test_mismatch_message_truncates(scratch_multi):
    # 640 entries - conv1.weight - 104 num_batches_tracked (which may be absent) = 535 missing.
    only_stem = {"conv1.weight": torch.zeros(64, 3, 7, 7)}
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \(535\).*and 525 more"):
        load_state_dict_checked(scratch_multi, only_stem, "adapted")


def _record_unpickling(marker: str) -> None:
    Path(marker).write_text("code ran")


class _Payload:
    """Unpickling this would run code (it writes a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (_record_unpickling, (self.marker,))


def test_load_uses_weights_only(tmp_path):
    marker = tmp_path / "marker.txt"
    disc = build_discriminator("output", 19)
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": disc.state_dict(), "extra": _Payload(marker)}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(disc, path)
    assert not marker.exists()


def test_detect_kind():
    assert detect_kind({"Scale.conv1.weight": torch.zeros(64, 3, 7, 7)}) == "init"
    assert detect_kind({"layer5.conv2d_list.0.weight": torch.zeros(21, 2048, 3, 3)}) == "init"
    assert detect_kind({"layer5.conv2d_list.0.weight": torch.zeros(19, 1024, 3, 3)}) == "adapted"
    assert detect_kind({"conv1.weight": torch.zeros(64, 19, 4, 4)}) == "discriminator"
    assert detect_kind({"0.weight": torch.zeros(64, 19, 4, 4)}) == "discriminator"
    assert detect_kind({"conv1.weight": torch.zeros(64, 3, 7, 7)}) == "adapted"


def test_torchvision_resnet101_keys_map(meta_multi):
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        tv = torchvision.models.resnet101(weights=None)
    mapped = torchvision_resnet101_to_deeplab(tv.state_dict())
    heads = ("layer5.", "layer6.")
    backbone = [(k, s) for k, s in _keys_shapes(meta_multi) if not k.startswith(heads)]
    assert sorted((k, list(v.shape)) for k, v in mapped.items()) == sorted(backbone)


@pytest.fixture(scope="module")
def torchvision_resnet101() -> nn.Module:
    """torchvision's ResNet-101, randomly initialised (no download), with random BN statistics
    and affine parameters so that a BN tensor mapped to the wrong place would show."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(4)
    net = torchvision.models.resnet101(weights=None)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0.0, 0.1, generator=g)
                m.running_mean.normal_(0.0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    return net.eval()


def _stem(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net.maxpool(net.relu(net.bn1(net.conv1(x))))  # same attribute names in both


def test_torchvision_resnet101_maps_every_backbone_tensor(torchvision_resnet101, scratch_multi):
    tv = torchvision_resnet101
    mapped = torchvision_resnet101_to_deeplab(tv.state_dict())
    assert set(tv.state_dict()) - set(mapped) == {"fc.weight", "fc.bias"}
    backbone = {k: v for k, v in scratch_multi.state_dict().items()
                if not k.startswith(("layer5.", "layer6."))}
    assert {k: v.shape for k, v in mapped.items()} == {k: v.shape for k, v in backbone.items()}
    report = load_state_dict_checked(scratch_multi, mapped, kind="init")
    assert report.ok and sorted(report.loaded) == sorted(backbone)
    assert {k.split(".")[0] for k in report.kept_init} == {"layer5", "layer6"}
    for k, v in scratch_multi.state_dict().items():
        if k in mapped:
            assert torch.equal(v, mapped[k]), k

    # Where the architectures agree, the mapped DeepLab computes what torchvision computes.
    scratch_multi.eval()
    try:
        with torch.no_grad():
            x = torch.randn(1, 3, 33, 65, generator=torch.Generator().manual_seed(6))
            # stem conv output 17x33 (odd): ceil- and floor-mode max-pools agree
            ours, theirs = _stem(scratch_multi, x), _stem(tv, x)
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
            ours, theirs = scratch_multi.layer1(ours), tv.layer1(theirs)
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
            # layer2: same size, but the stride sits on conv1 (caffe) vs conv2 (torchvision)
            ours, theirs = scratch_multi.layer2(ours), tv.layer2(theirs)
            assert ours.shape == theirs.shape == (1, 512, 5, 9)
            assert not torch.allclose(ours, theirs)
            # layer3/4: dilation instead of stride, so DeepLab keeps the resolution
            assert scratch_multi.layer3(ours).shape[2:] == (5, 9)
            assert tv.layer3(theirs).shape[2:] == (3, 5)
            # an even stem output (input 32x64): DeepLab's ceil-mode pool is one larger
            y = torch.randn(1, 3, 32, 64)
            assert _stem(scratch_multi, y).shape[2:] == (9, 17)
            assert _stem(tv, y).shape[2:] == (8, 16)
    finally:
        scratch_multi.train()


def test_convert_torchvision_resnet101_command(torchvision_resnet101, scratch_multi, tmp_path,
                                               capsys, monkeypatch):
    import importlib.util

    from segda import io, weights

    spec = importlib.util.spec_from_file_location(
        "convert", Path(__file__).resolve().parents[1] / "data_scripts/convert_torchvision_resnet101.py")
    command = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(command)
    fake = tmp_path / "resnet101-63fe2227.pth"  # torchvision's name, but not its file
    torch.save(torchvision_resnet101.state_dict(), fake)
    out = tmp_path / "init.pth"
    assert command.main(["--input", str(fake), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert str(fake) in err and "63fe2227" in err and not out.exists()
    assert "download it again from https://download.pytorch.org/models/resnet101-63fe2227.pth" in err
    # a file under a name torchvision does not use is converted, unchecked
    mine = fake.rename(tmp_path / "my_resnet101.pth")
    assert command.main(["--input", str(mine), "--output", str(out)]) == 0
    assert "is not checked" in capsys.readouterr().out
    report = load_checkpoint(scratch_multi, out)  # kind="auto": the Scale. prefix marks an init
    assert report.kind == "init" and report.ok and not report.dropped
    assert torch.equal(scratch_multi.state_dict()["layer3.22.bn3.running_var"],
                       torchvision_resnet101.state_dict()["layer3.22.bn3.running_var"])
    # a known name whose SHA-256 matches is accepted
    digest = io.sha256(mine)
    known = mine.rename(tmp_path / f"resnet101-{digest[:8]}.pth")
    monkeypatch.setitem(weights.TORCHVISION_RESNET101, known.name, "test URL")
    assert command.main(["--input", str(known), "--output", str(out)]) == 0
    assert f"SHA-256 {digest} matches" in capsys.readouterr().out
    assert command.main(["--input", str(tmp_path / "absent.pth")]) == 1
    assert f"no file {tmp_path / 'absent.pth'}" in capsys.readouterr().err
    for content, why in (({"model": {"conv1.weight": torch.zeros(1)}, "epoch": 3},
                          "does not hold a state_dict"),
                         ({"conv1.weight": torch.zeros(1)}, "does not look like a torchvision")):
        other = tmp_path / "other.pth"
        torch.save(content, other)
        assert command.main(["--input", str(other), "--output", str(out)]) == 1
        assert f"{other}" in (err := capsys.readouterr().err) and why in err


@pytest.mark.parametrize(("name", "branches"), [
    ("GTA2Cityscapes_multi-ed35151c.pth", 2),
    ("http://vllab.ucmerced.edu/ytsai/CVPR18/GTA2Cityscapes_vgg-ac4ac9f6.pth", 2),
    ("checkpoints/DeepLab_VGG_gta.pth", 2),
    ("/data/AdaptSegNet_LSGAN_models/single_level.pth", 2),
    ("gta2cityscapes_advent.pth", 4),
    ("gta2cityscapes_minent_ER.pth", 4),
    ("DeepLab_resnet_pretrained_imagenet.pth", 4),
    ("runs/advent_multi/model_120000.pth", 4),
])
def test_aspp_branches_for(name, branches):
    assert aspp_branches_for(name) == branches
