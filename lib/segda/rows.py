"""The table of results rows: what each row of the results tables is, in one place.

A row is what a run folder holds and what a results table prints: its key (the folder name,
``"advent"``), its label (``"AdvEnt"``), the presets that train it at each scale, how the
official code names its snapshots, whether it is an ensemble of other rows, and where it
starts. :mod:`segda.results`, :mod:`segda.notebook`, :mod:`segda.ledger` and
:mod:`segda.experiments` read this table; a new method adds its row with :func:`register`
beside its :func:`segda.methods.register`.
"""

from __future__ import annotations

from dataclasses import dataclass

from segda import config

# The official loops' snapshot files: ADVENT's ``model_i.pth``, AdaptSegNet's ``GTA5_i.pth``
# (segda.ledger's docstring gives their update counts).
SNAPSHOT_NAMINGS = ("advent", "adaptsegnet")
# Where a row starts: the source-only model every adaptation row of a seed starts from, or
# the preset's own initialisation (scratch for the embedded rows, the backbone's weights at
# paper scale).
STARTS = ("pretrained", "preset")
# The row of the control's final model with its batch-norm statistics re-estimated on target
# images (AdaBN, no training; segda.decomposition), and the suffix of every other row's.
ADABN = "adabn"
POSTHOC_SUFFIX = "+adabn"


@dataclass(frozen=True)
class Row:
    """One results row.

    Args:
        key: the run folder's name and the row's name in code (``"advent"``).
        label: what tables print (``"AdvEnt"``).
        embedded: the embedded preset's name (``presets/embedded/<name>``); ``None`` for rows
            only the papers' scale has.
        paper: the paper preset's name (``presets/paper/<name>``); ``None``: none.
        snapshots: whose snapshot names the ledger gives it (:data:`SNAPSHOT_NAMINGS`).
        members: the rows an ensemble row averages (empty: a trained row).
        start: ``"pretrained"``: warm-started from the seed's source-only model;
            ``"preset"``: trained from the preset's own initialisation.
        control: the row every gain is paired against.
        baseline: a row far from the control (a plot of gains leaves it out).
        suite: trained by the suite as an adaptation row (``False`` for the starting model
            and the oracle, which the suite trains on their own).
    """

    key: str
    label: str
    embedded: str | None = None
    paper: str | None = None
    snapshots: str = "adaptsegnet"
    members: tuple[str, ...] = ()
    start: str = "pretrained"
    control: bool = False
    baseline: bool = False
    suite: bool = True

    def __post_init__(self):
        if self.snapshots not in SNAPSHOT_NAMINGS:
            raise ValueError(f"row {self.key!r}: snapshots must be one of {SNAPSHOT_NAMINGS}, "
                             f"got {self.snapshots!r}")
        if self.start not in STARTS:
            raise ValueError(f"row {self.key!r}: start must be one of {STARTS}, got {self.start!r}")

    @property
    def warm_started(self) -> bool:
        return self.start == "pretrained"


def _row(key: str, label: str, **kw) -> Row:
    """A row whose presets carry its key, at both scales (unless ``kw`` says otherwise)."""
    return Row(key, label, **{"embedded": key, "paper": key, **kw})


ROWS: dict[str, Row] = {r.key: r for r in [
    _row("source_pretrain", "source-only (pretrained checkpoint)", paper=None, start="preset",
         suite=False),
    # The embedded walk trains every loss with batch norm frozen, so its control is plain
    # source-only trained the same way. Two rows take what batch-norm statistics give for free:
    # AdaBN (the control's statistics re-estimated on target images after training, no weight
    # changed) and training-mode batch norm forwarding target images with no target loss (what
    # the official loops do implicitly).
    _row("source_only", "source-only (control)", control=True),
    Row(ADABN, "AdaBN (target statistics, no training)", suite=False, baseline=True),
    _row("source_only_tgt_bn", "training-mode BN on target (no target loss)", baseline=True),
    _row("feature_adv", "feature-level adversarial"),
    _row("output_adv_single", "AdaptSegNet single-level", paper="adaptsegnet_single"),
    _row("output_adv_multi", "AdaptSegNet multi-level", paper="adaptsegnet_multi"),
    _row("minent", "MinEnt", snapshots="advent"),
    # The papers report MinEnt + CP only with VGG-16, so that row's paper preset is that one.
    _row("minent_cp", "MinEnt + CP", paper="minent_vgg_cp", snapshots="advent"),
    _row("advent", "AdvEnt", snapshots="advent"),
    # ADVENT's ensemble: evaluated from its members' models, trained by nobody.
    Row("advent+minent", "AdvEnt + MinEnt (ensemble)", members=("advent", "minent"), suite=False),
    _row("oracle", "oracle (target-trained)", start="preset", baseline=True, suite=False),
    # Rows only the papers' scale has (the AdaptSegNet authors ran them with their script).
    Row("adaptsegnet_lsgan_single", "AdaptSegNet single-level (LS-GAN)",
        paper="adaptsegnet_lsgan_single"),
    Row("adaptsegnet_vgg_single", "AdaptSegNet single-level (VGG-16)",
        paper="adaptsegnet_vgg_single"),
    Row("advent_vgg_cp", "AdvEnt + CP (VGG-16)", paper="advent_vgg_cp", snapshots="advent"),
]}


def register(row: Row, replace: bool = False) -> Row:
    """Add a row to the table (after the others), so results tables, the ledger and the
    notebooks know it; its presets are added under ``presets/`` as for any method."""
    if row.key in ROWS and not replace:
        raise ValueError(f"a row called {row.key!r} exists; pass replace=True to change it")
    unknown = [m for m in row.members if m not in ROWS]
    if unknown:
        raise ValueError(f"row {row.key!r}: its members {unknown} are no rows; register them first")
    ROWS[row.key] = row
    return row


def get(key: str) -> Row:
    """The row called ``key``; a :class:`ValueError` listing the known ones otherwise."""
    if key not in ROWS:
        raise ValueError(f"no results row called {key!r}; known rows: {sorted(ROWS)}")
    return ROWS[key]


def find(name: str) -> Row | None:
    """The row whose key, or whose paper preset's name, is ``name`` (a run folder's name:
    ``"advent"``, ``"adaptsegnet_single"``); ``None`` for a variant or an unknown folder."""
    if name in ROWS:
        return ROWS[name]
    return next((r for r in ROWS.values() if r.paper == name), None)


def label(name: str) -> str:
    """What tables print for the row of the folder ``name``; a variant keeps its name, and a
    row's final model with post-hoc AdaBN is its row's label with ``+ AdaBN``."""
    if name.endswith(POSTHOC_SUFFIX) and find(name[: -len(POSTHOC_SUFFIX)]) is not None:
        return f"{label(name[: -len(POSTHOC_SUFFIX)])} + AdaBN"
    row = find(name)
    return name if row is None else row.label


def labels() -> set[str]:
    """Every row's label."""
    return {r.label for r in ROWS.values()}


def names() -> list[str]:
    """Every folder name a row's runs live under (keys and paper preset names), in table order."""
    return [n for r in ROWS.values() for n in dict.fromkeys((r.key, r.paper)) if n]


def key_of(run: str) -> str:
    """The folder name of a run (``"seed0/advent"`` -> ``"advent"``): the key a collected
    run is grouped under."""
    return str(run).split("/")[-1]


def keys(df):
    """:func:`key_of` for every run of a :func:`segda.runs.collect` table (a Series)."""
    return df["run"].map(key_of)


def table_order() -> list[str]:
    """The folder names of the main rows in the order tables print them, each paper run
    beside its row; rows only the papers have are not part of it (they follow, sorted)."""
    return [n for r in ROWS.values() if r.embedded or r.members or r.key == ADABN
            for n in dict.fromkeys((r.key, r.paper)) if n]


def adaptation() -> tuple[str, ...]:
    """The embedded rows the suite trains from the starting point, in table order."""
    return tuple(r.key for r in ROWS.values() if r.suite and r.embedded and r.warm_started)


def ensemble() -> Row:
    """The (first) ensemble row."""
    return next(r for r in ROWS.values() if r.members)


def control() -> str:
    """The key of the row every gain is paired against."""
    return next(r.key for r in ROWS.values() if r.control)


def baselines() -> tuple[str, ...]:
    """The labels of the rows far from the control (left out of plots of gains)."""
    return tuple(r.label for r in ROWS.values() if r.baseline)


def compared() -> list[str]:
    """The rows a run of the demo is set beside the reference for: the control first, then
    every embedded row and ensemble but the starting model."""
    rest = [r.key for r in ROWS.values() if (r.embedded or r.members) and r.key != "source_pretrain"]
    return list(dict.fromkeys([control(), *rest]))


def preset_of(key: str, family: str = "embedded") -> str:
    """The preset that trains row ``key`` at the scale ``family`` (``"embedded"`` or
    ``"paper"``): ``preset_of("output_adv_single", "paper")`` is ``"paper/adaptsegnet_single"``;
    a name that is no row keeps its name."""
    row = ROWS.get(key)
    name = key if row is None else (row.paper if family == "paper" else row.embedded) or key
    return f"{family}/{name}"


def key_of_preset(preset: str) -> str:
    """The row a preset trains: ``"advent"`` for ``embedded/advent`` and ``paper/advent``,
    ``"output_adv_single"`` for ``paper/adaptsegnet_single``; a preset of no row keeps its name."""
    family, name = preset.split("/")[0] if "/" in preset else "embedded", preset.split("/")[-1]
    field = "paper" if family == "paper" else "embedded"
    return next((r.key for r in ROWS.values() if getattr(r, field) == name), name)


def warm_started(preset: str) -> bool:
    """Whether ``preset`` (``"embedded/advent"``) starts from the seed's source-only model:
    every embedded preset but those of rows that start from their own initialisation."""
    family, _, name = preset.rpartition("/")
    if family != "embedded":
        return False
    row = next((r for r in ROWS.values() if r.embedded == name), None)
    return row is None or row.warm_started


def row_of(cfg: config.TrainConfig) -> str:
    """The row a config trains, from its method (a key of :data:`ROWS`, or a descriptive name
    for configs no row has: ``"advent_cp"``, ``"output_adv_single_lsgan"``)."""
    m = cfg.method
    if cfg.data.train_on == "target":
        return "oracle"
    name = m.name
    if name == "output_adv":
        name = f"output_adv_{m.levels}"
    if m.lambda_cp > 0:
        name += "_cp"
    if m.gan_loss != "bce":
        name += f"_{m.gan_loss}"
    return name


def snapshot_naming(cfg: config.TrainConfig) -> str:
    """Whose snapshot names a config's snapshots get: its row's, else the row of its method's
    name (``advent`` with CP is ADVENT's), else AdaptSegNet's."""
    row = ROWS.get(row_of(cfg)) or ROWS.get(cfg.method.name)
    return "adaptsegnet" if row is None else row.snapshots
