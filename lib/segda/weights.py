"""The official init weights and released models: where they were, which links still work, and
a checked download.

Nothing is downloaded at import. :func:`fetch` downloads one file with ``urllib`` into a weights
folder and checks its SHA-256 against the prefix in the file name (the ``-xxxxxxxx.pth`` suffix
follows the ``torch.utils.model_zoo`` convention: leading hex digits of the file's SHA-256).
A file that fails the check is moved to ``<weights>/rejected/`` and never returned.

Link status (as reported by users; see AdaptSegNet#108 and the project's fact sheet): the
``vllab.ucmerced.edu`` files and the Dropbox zips return 404; ADVENT's GitHub-release assets
still download. For the dead DeepLab init, :func:`instructions` explains the alternatives.
"""

from __future__ import annotations

import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from segda import io

DEFAULT_DIR = Path("weights")
_HASH_SUFFIX = re.compile(r"-([0-9a-f]{6,64})\.[A-Za-z0-9]+$")


class WeightsError(RuntimeError):
    """A weights file cannot be obtained or is not the expected file."""


class ChecksumMismatchError(WeightsError):
    """The file's SHA-256 does not start with the expected prefix."""


class WeightsUnavailableError(WeightsError):
    """No URL for the file works; the message says what to do instead."""


@dataclass(frozen=True)
class WeightSpec:
    name: str
    filename: str
    urls: tuple[str, ...]
    what: str
    named_in: str
    status: str  # "dead" (reported 404), "alive" (reported to work), "unknown", "unconfirmed"
    sha256_prefix: str | None = None
    note: str = ""

    @property
    def expected_prefix(self) -> str | None:
        return self.sha256_prefix or expected_prefix_from_filename(self.filename)


_UCM = "http://vllab.ucmerced.edu/ytsai/CVPR18/"
_ADV = "https://github.com/valeoai/ADVENT/releases/download/v0.1/"

WEIGHTS: dict[str, WeightSpec] = {s.name: s for s in [
    WeightSpec(
        "deeplab_init_asn", "DeepLab_resnet_pretrained_init-f81d91e8.pth",
        (_UCM + "DeepLab_resnet_pretrained_init-f81d91e8.pth",
         _UCM + "DeepLab_resnet_pretrained_init.pth"),
        "DeepLab-v2 ResNet-101 init (ImageNet+COCO, the DeepLab init.caffemodel; AdaptSegNet#5)",
        "AdaptSegNet train_gta2cityscapes_multi.py RESTORE_FROM", "dead",
        note="reported 404 since 2023 (AdaptSegNet#108)",
    ),
    WeightSpec(
        "deeplab_init_advent", "DeepLab_resnet_pretrained_imagenet.pth",
        (_ADV + "DeepLab_resnet_pretrained_imagenet.pth",),
        "DeepLab-v2 ResNet-101 init used by ADVENT (named 'imagenet'; whether it equals "
        "AdaptSegNet's init is unconfirmed, ADVENT#33)",
        "ADVENT configs and README (GitHub release v0.1)", "alive",
        note="no hash published; SHA-256 is recorded but not checked",
    ),
    WeightSpec(
        "asn_gta2cityscapes_multi", "GTA2Cityscapes_multi-ed35151c.pth",
        (_UCM + "GTA2Cityscapes_multi-ed35151c.pth", _UCM + "GTA2Cityscapes_multi.pth"),
        "AdaptSegNet multi-level ResNet-101 model, GTA5->Cityscapes (42.35 mIoU, #56)",
        "AdaptSegNet README and evaluate_cityscapes.py", "dead",
        note="reported 404 (ucmerced host)",
    ),
    WeightSpec(
        "asn_gta2cityscapes_vgg", "GTA2Cityscapes_vgg-ac4ac9f6.pth",
        (_UCM + "GTA2Cityscapes_vgg-ac4ac9f6.pth",),
        "AdaptSegNet VGG-16 model, GTA5->Cityscapes",
        "AdaptSegNet README and RESTORE_FROM_VGG", "dead", note="reported 404 (ucmerced host)",
    ),
    WeightSpec(
        "asn_cityscapes_oracle", "cityscapes_oracle-b7b9934.pth",
        ("http://vllab1.ucmerced.edu/~whung/adaptSeg/cityscapes_oracle-b7b9934.pth",),
        "AdaptSegNet Cityscapes oracle (Res_Deeplab)",
        "AdaptSegNet evaluate_cityscapes.py RESTORE_FROM_ORC", "unknown",
        note="same university's host as the dead links; not confirmed either way",
    ),
    # The README names these with ?dl=0 (Dropbox's web page); ?dl=1 asks for the file itself.
    WeightSpec(
        "asn_da_seg_models_zip", "DA_Seg_models.zip",
        ("https://www.dropbox.com/s/gpzm15ipyt01mis/DA_Seg_models.zip?dl=1",),
        "AdaptSegNet ResNet-101 models for its 3 benchmarks (no-adapt, feature, single, multi)",
        "AdaptSegNet README", "dead", note="reported 404 (AdaptSegNet#108)",
    ),
    WeightSpec(
        "asn_lsgan_models_zip", "AdaptSegNet_LSGAN_models.zip",
        ("https://www.dropbox.com/s/sif9cd6ad4s9y5d/AdaptSegNet_LSGAN_models.zip?dl=1",),
        "AdaptSegNet LS-GAN and Synscapes single-level models", "AdaptSegNet README", "dead",
        note="Dropbox links of the README reported 404",
    ),
    WeightSpec(
        "resnet101_caffe_imagenet", "resnet101-caffe.pth",
        ("https://www.dropbox.com/s/87m2lnu3dxfy7o1/resnet101-caffe.pth?dl=1",),
        "ImageNet-only caffe ResNet-101 (secondary: a user quoting the authors, AdaptSegNet#56)",
        "AdaptSegNet#56", "unknown",
    ),
    WeightSpec(
        "advent_gta2cityscapes", "gta2cityscapes_advent.pth",
        (_ADV + "gta2cityscapes_advent.pth",),
        "ADVENT AdvEnt model, GTA5->Cityscapes", "ADVENT advent_pretrained.yml", "alive",
        note="no hash published",
    ),
    WeightSpec(
        "advent_gta2cityscapes_minent_er", "gta2cityscapes_minent_ER.pth", (),
        "ADVENT MinEnt (+ER) model", "ADVENT minent_pretrained.yml", "unconfirmed",
        note="release tag and URL not confirmed; see the ADVENT README's releases page",
    ),
    WeightSpec(
        "advent_gta2cityscapes_advent_cyclegan", "gta2cityscapes_advent_cyclegan.pth", (),
        "ADVENT AdvEnt model trained on CycleGAN-translated GTA5", "ADVENT "
        "advent_cyclegan_pretrained.yml", "unconfirmed",
        note="release tag and URL not confirmed; see the ADVENT README's releases page",
    ),
]}

DEAD_INIT_HELP = """\
The AdaptSegNet DeepLab init ({filename}) is no longer online (its ucmerced link returns 404,
AdaptSegNet#108). Options, best first:
  1. ADVENT's init, still on GitHub:  python data_scripts/download_weights.py deeplab_init_advent
     (ADVENT trains from it; whether it is byte-identical to AdaptSegNet's is unconfirmed.)
  2. If you have a copy of {filename} from elsewhere (a colleague, the Google-Drive mirror
     1BMTTMCNkV98pjZh_rU0Pp47zeVqF3MEc from layumi/AdaBoost_Seg#2, content unconfirmed), put it
     in the weights folder and check it:  python data_scripts/download_weights.py --verify
     PATH --name deeplab_init_asn   (its SHA-256 must start with {prefix}).
  3. torchvision's ImageNet ResNet-101, downloaded by you and mapped onto the DeepLab-v2 keys
     (segda.models.checkpoints.torchvision_resnet101_to_deeplab):
       python data_scripts/convert_torchvision_resnet101.py --input resnet101-63fe2227.pth
     An ImageNet-only start with RGB input normalised by ImageNet statistics: set
     data.normalization=imagenet; expect lower numbers than the papers, whose init also saw
     COCO (data_scripts/README.md lists how the two networks differ)."""

# torchvision's ImageNet ResNet-101 files (torchvision.models.ResNet101_Weights). As for
# model_zoo files, the hex digits in the name are the leading digits of the file's SHA-256
# (torch.hub's check_hash convention), so a file under one of these names can be verified.
TORCHVISION_RESNET101 = {
    "resnet101-63fe2227.pth": "https://download.pytorch.org/models/resnet101-63fe2227.pth "
                              "(ResNet101_Weights.IMAGENET1K_V1)",
    "resnet101-cd907fc2.pth": "https://download.pytorch.org/models/resnet101-cd907fc2.pth "
                              "(ResNet101_Weights.IMAGENET1K_V2)",
}
DEFAULT_TORCHVISION_INIT = DEFAULT_DIR / "deeplab_init_torchvision_resnet101.pth"


def expected_prefix_from_filename(filename: str) -> str | None:
    """``name-f81d91e8.pth`` -> ``"f81d91e8"`` (model_zoo convention); None without a suffix."""
    m = _HASH_SUFFIX.search(filename)
    return m.group(1) if m else None


def verify(path: str | Path, prefix: str | None) -> str:
    """SHA-256 of ``path``; raises :class:`ChecksumMismatchError` if it does not start with
    ``prefix`` (no check when ``prefix`` is None)."""
    digest = io.sha256(path)
    if prefix is not None and not digest.startswith(prefix.lower()):
        raise ChecksumMismatchError(
            f"{path}: SHA-256 {digest} does not start with the expected {prefix}"
        )
    return digest


def instructions(name: str) -> str:
    """What to do when ``name`` cannot be downloaded."""
    spec = WEIGHTS[name]
    if name == "deeplab_init_asn":
        return DEAD_INIT_HELP.format(filename=spec.filename, prefix=spec.expected_prefix)
    lines = [f"{spec.filename}: {spec.what}.", f"Named in: {spec.named_in}. Status: {spec.status}"
             + (f" ({spec.note})." if spec.note else ".")]
    if spec.status in ("dead", "unknown", "unconfirmed"):
        lines.append("If you have this file from another source, copy it to the weights folder"
                     + (f" and check that its SHA-256 starts with {spec.expected_prefix}"
                        if spec.expected_prefix else "") + ".")
    if name.startswith("asn_"):
        lines.append("To reproduce it instead, train with the matching segda preset from the "
                     "init weights (deeplab_init_advent, or see `instructions('deeplab_init_asn')`).")
    return "\n".join(lines)


def _reject(path: Path, name: str, weights_dir: Path, digest: str) -> Path:
    """Move the file at ``path`` (the weights file ``name``) aside into ``rejected/``."""
    rejected = weights_dir / "rejected"
    rejected.mkdir(parents=True, exist_ok=True)
    dest = rejected / f"{name}.sha256-{digest[:12]}"
    shutil.move(str(path), dest)
    return dest


def _download(url: str, path: Path, prefix: str | None, timeout: float,
              log: Callable[[str], None]) -> str:
    """Download ``url`` to ``path`` atomically and return its SHA-256. A file whose SHA-256
    does not start with ``prefix`` never takes the name: it is moved to ``rejected/``
    (:class:`ChecksumMismatchError`)."""
    digest = ""

    def check(downloaded: Path) -> None:  # before the rename (see segda.io.write_atomic)
        nonlocal digest
        digest = io.sha256(downloaded)
        if prefix is not None and not digest.startswith(prefix):
            dest = _reject(downloaded, path.name, path.parent, digest)
            raise ChecksumMismatchError(
                f"{url} gave a file whose SHA-256 {digest} does not start with {prefix}; it was "
                f"not used and is kept at {dest}"
            )

    log(f"downloading {url}")
    req = urllib.request.Request(url, headers={"User-Agent": "segda"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        io.write_atomic(path, lambda f: shutil.copyfileobj(resp, f, length=1 << 20),
                        size_hint=getattr(resp, "length", None) or 0, check=check)
    return digest


def fetch(
    spec: WeightSpec | str,
    weights_dir: str | Path = DEFAULT_DIR,
    force: bool = False,
    timeout: float = 60.0,
    log: Callable[[str], None] = print,
) -> Path:
    """The verified local path of ``spec``'s file, downloading it first if needed.

    An existing file is checked, not downloaded again (``force`` re-downloads). Each URL is
    tried in turn; if none works, :class:`WeightsUnavailableError` carries the instructions.
    A file whose SHA-256 does not match is moved to ``rejected/`` and raises
    :class:`ChecksumMismatchError`.
    """
    spec = WEIGHTS[spec] if isinstance(spec, str) else spec
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    path = weights_dir / spec.filename
    prefix = spec.expected_prefix
    if path.exists() and not force:
        try:
            verify(path, prefix)
        except ChecksumMismatchError as err:
            dest = _reject(path, path.name, weights_dir, io.sha256(path))
            raise ChecksumMismatchError(f"{err}; moved it to {dest}") from None
        return path
    errors = []
    for url in spec.urls:
        try:
            digest = _download(url, path, prefix, timeout, log)
        except io.DiskFullError:
            raise  # not a dead link: every other URL would fail the same way
        except (urllib.error.URLError, OSError, ValueError) as err:
            errors.append(f"{url}: {err}")
            continue
        log(f"saved {path} (sha256 {digest})")
        return path
    tried = "\n".join(f"  {e}" for e in errors) or "  (no URL is known)"
    name = spec.name if spec.name in WEIGHTS else None
    help_text = instructions(name) if name else ""
    raise WeightsUnavailableError(f"cannot download {spec.filename}; tried:\n{tried}\n{help_text}")


def status_table() -> list[dict]:
    """One row per known file: name, file, status, hash prefix, URL (for notebooks and --list)."""
    return [
        {"name": s.name, "file": s.filename, "status": s.status,
         "sha256_prefix": s.expected_prefix or "-", "url": s.urls[0] if s.urls else "-",
         "what": s.what}
        for s in WEIGHTS.values()
    ]


def convert_torchvision_resnet101(
    src: str | Path, dst: str | Path = DEFAULT_TORCHVISION_INIT,
    log: Callable[[str], None] = print,
) -> Path:
    """Write a DeepLab-v2 init file from a torchvision ImageNet ResNet-101 ``.pth``.

    A file named as one of torchvision's (:data:`TORCHVISION_RESNET101`) must have the SHA-256
    its name announces (:class:`ChecksumMismatchError` otherwise); any other name is converted
    with its SHA-256 printed but not checked. The output holds the backbone under the official
    init's ``Scale.`` prefix, so ``model.init_checkpoint`` loads it as an init (``kind="auto"``):
    see :func:`segda.models.checkpoints.torchvision_resnet101_to_deeplab` for what the mapping
    does and how the two networks differ. Train from it with ``data.normalization=imagenet``.
    """
    import torch

    from segda.models.checkpoints import INIT_PREFIX, torchvision_resnet101_to_deeplab

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise WeightsError(f"no file {src}; download torchvision's ResNet-101 first, e.g. "
                           f"{TORCHVISION_RESNET101['resnet101-63fe2227.pth']}")
    if src.name in TORCHVISION_RESNET101:
        prefix = expected_prefix_from_filename(src.name)
        try:
            digest = verify(src, prefix)
        except ChecksumMismatchError as err:
            raise ChecksumMismatchError(
                f"{err}: {src} is not torchvision's {src.name} (truncated or another file); "
                f"download it again from {TORCHVISION_RESNET101[src.name]}"
            ) from None
        log(f"{src}: SHA-256 {digest} matches torchvision's {src.name}")
    else:
        log(f"{src}: not one of torchvision's file names ({', '.join(TORCHVISION_RESNET101)}), "
            f"so its SHA-256 ({io.sha256(src)}) is not checked")
    try:
        state = io.load_file(src)
    except io.CheckpointError as err:
        raise WeightsError(str(err)) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{src} does not hold a state_dict (a dict of tensors)")
    try:
        mapped = torchvision_resnet101_to_deeplab(state)
    except ValueError as err:
        raise WeightsError(f"{src}: {err}") from None
    io.save_atomic({INIT_PREFIX + k: v for k, v in mapped.items()}, dst)
    log(f"wrote {dst}: {len(mapped)} backbone tensors; train with --set "
        f"model.init_checkpoint={dst} --set data.normalization=imagenet")
    return dst
