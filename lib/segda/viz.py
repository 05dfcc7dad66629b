"""Pictures of labels, predictions, uncertainty and results, for notebooks and reports.

Every function returns a numpy array or a matplotlib ``Figure`` and never calls ``plt.show``,
so the module works under the Agg backend (tests, papermill, nbval) as well as inline in
Jupyter. Figures are created through pyplot and closed straight away: pyplot registers the
notebook's figure formatter, so a returned figure still renders when it is a cell's value, but
it is not drawn a second time at the end of the cell and pyplot keeps no reference to it.

Arrays may be numpy arrays or torch tensors (on any device); they come back as numpy arrays.
Colours are the Cityscapes palette of :mod:`segda.labels`; the ignore label (255) is black.

Every figure is drawn at :data:`DPI` and at most :data:`MAX_WIDTH_PX` pixels wide, the width a
notebook shows without shrinking it: grids and bar charts too wide for one row are split into
rows. Legends sit outside the axes, so they never cover a bar.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from segda.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, PALETTE, palette_array
from segda.losses import weighted_self_information

# Input normalisations ``to_display`` undoes (``DataConfig.normalization``). Their constants
# live with the datasets that apply them (segda.data.synthetic, segda.data.real).
NORMALIZATIONS = ("embedded", "imagenet", "caffe")

# How much of a pixel's brightness is kept outside a highlighted class.
DIM_FACTOR = 0.25

# Pixels per inch of every figure, set on the figure itself so that the notebook's inline
# backend (which saves at the figure's dpi) draws it at the size chosen here.
DPI = 100
# The widest figure, in pixels: what a notebook page shows without shrinking the text. The
# inline backend saves with bbox_inches="tight", which pads 0.1 inch on each side: a figure
# may be that much narrower than the limit.
MAX_WIDTH_PX = 1400
MAX_WIDTH_IN = (MAX_WIDTH_PX - 2 * 0.1 * DPI) / DPI

# A discriminator's logged loss on one domain when it cannot tell the domains apart (it
# outputs 0.5 everywhere): the step logs half of each domain's GAN loss
# (segda.methods.discriminator_losses), so ln 2 / 2 for BCE and 0.25 / 2 for LS-GAN.
DISC_CHANCE_LOSS = {"bce": 0.5 * float(np.log(2.0)), "lsgan": 0.5 * 0.25}

# The y-axis label of a logged loss term, by the prefix of its name.
LOSS_AXIS_LABELS = (
    ("disc_", "D loss on one domain (GAN loss / 2)"),
    ("adv_", "lambda_adv x GAN loss (target as source)"),
    ("ent_", "lambda_ent x mean entropy"),
    ("cp_", "lambda_cp x class-ratio prior"),
    ("seg_", "cross-entropy (source labels)"),
)


def as_numpy(x) -> np.ndarray:
    """A CPU numpy array of a tensor (detached) or array-like."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def new_figure(nrows: int, ncols: int, figsize: tuple[float, float], **kwargs):
    """``plt.subplots`` (axes always 2-D) at :data:`DPI`, with the figure closed at once (see
    the module docstring). A width over :data:`MAX_WIDTH_IN` is cut to it: a safety net, the
    figures split their rows before they get that wide."""
    import matplotlib.pyplot as plt

    width, height = figsize
    fig, axes = plt.subplots(nrows, ncols, figsize=(min(width, MAX_WIDTH_IN), height), dpi=DPI,
                             squeeze=False, **kwargs)
    plt.close(fig)
    return fig, axes


def range_label(what: str, low: float, high: float) -> str:
    """A colour bar's label: what the colours hold and their range, ``"entropy (0 to 1)"``."""
    return f"{what} ({low:.3g} to {high:.3g})"


def _chunks(items: Sequence, fit: int) -> list[list]:
    """``items`` cut into as few runs of at most ``fit`` as possible, of nearly equal length."""
    items = list(items)
    parts = max(1, -(-len(items) // max(fit, 1)))
    size = -(-len(items) // parts)
    return [items[i:i + size] for i in range(0, len(items), size)]


def colorize(label) -> np.ndarray:
    """Label map to an RGB image in the Cityscapes palette; ignore (255) and unknown ids black.

    Shape: ``(H, W)`` integer train ids -> ``(H, W, 3)`` uint8.
    """
    lab = as_numpy(label).astype(np.int64)
    # Ids outside the 256-entry table (negative, or >= 256) are drawn as ignore.
    lab = np.where((lab < 0) | (lab > 255), IGNORE_INDEX, lab)
    return palette_array()[lab]


def overlay(image01, label, alpha: float = 0.5) -> np.ndarray:
    """Blend the colourised ``label`` over an image: ``(1 - alpha) * image + alpha * colours``.

    Ignore pixels (255) keep the image unblended, so unlabelled regions stay readable.

    Shape: image ``(H, W, 3)`` float in [0, 1] (uint8 is rescaled), label ``(H, W)``
    -> ``(H, W, 3)`` float32 in [0, 1].
    """
    img = as_numpy(image01)
    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    lab = as_numpy(label)
    colours = colorize(lab).astype(np.float32) / 255.0
    blended = (1.0 - alpha) * img + alpha * colours
    ignore = (lab == IGNORE_INDEX)[..., None]
    return np.clip(np.where(ignore, img, blended), 0.0, 1.0).astype(np.float32)


def _looks_like_prob(x: torch.Tensor) -> bool:
    if x.min() < 0 or x.max() > 1:
        return False
    return bool(torch.allclose(x.sum(1), torch.ones_like(x[:, 0]), atol=1e-3))


def entropy_map(logits_or_prob, kind: str = "auto") -> np.ndarray:
    """Per-pixel entropy normalised by ``log2(C)``: 1 for a uniform, 0 for a one-hot prediction.

    The channel sum of ADVENT's weighted self-information map
    (:func:`segda.losses.weighted_self_information`).

    Args:
        logits_or_prob: class scores, ``(C, H, W)`` or ``(N, C, H, W)``.
        kind: ``"logits"`` (softmax applied), ``"prob"`` (used as given) or ``"auto"``
            (probabilities when values lie in [0, 1] and sum to 1 over channels).

    Shape: ``(C, H, W)`` or ``(1, C, H, W)`` -> ``(H, W)``; ``(N, C, H, W)`` -> ``(N, H, W)``;
    float32 in [0, 1].
    """
    x = torch.as_tensor(logits_or_prob).detach().float()
    single = x.dim() == 3
    if single:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"expected (C, H, W) or (N, C, H, W), got shape {tuple(x.shape)}")
    if kind not in ("auto", "logits", "prob"):
        raise ValueError(f"kind must be 'auto', 'logits' or 'prob', got {kind!r}")
    is_prob = kind == "prob" or (kind == "auto" and _looks_like_prob(x))
    prob = x if is_prob else torch.softmax(x, dim=1)
    ent = weighted_self_information(prob).sum(1).clamp_(0.0, 1.0)
    out = ent.cpu().numpy()
    return out[0] if single or out.shape[0] == 1 else out


def highlight_class(label_or_pred, class_id: int) -> np.ndarray:
    """Boolean mask of the pixels labelled (or predicted) ``class_id``. Shape: ``(H, W)``."""
    return as_numpy(label_or_pred) == class_id


def dim_outside(rgb, mask, factor: float = DIM_FACTOR) -> np.ndarray:
    """Darken the pixels of an RGB image outside ``mask`` (multiplied by ``factor``).

    Shape: rgb ``(H, W, 3)`` float in [0, 1] or uint8, mask ``(H, W)`` bool -> ``(H, W, 3)``
    float32 in [0, 1].
    """
    img = as_numpy(rgb)
    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    return np.where(as_numpy(mask)[..., None], img, factor * img).astype(np.float32)


def denormalize_embedded(image_tensor) -> np.ndarray:
    """Network input of the embedded benchmark back to a displayable image (adds the mean).

    Shape: ``(3, H, W)`` or ``(1, 3, H, W)`` -> ``(H, W, 3)`` float32 in [0, 1].
    """
    return to_display(image_tensor, "embedded")


def to_display(image_tensor, normalization: str = "embedded") -> np.ndarray:
    """Undo a dataset's input normalisation for display (the one inverse of
    :func:`segda.data.real.normalize` and of the embedded benchmark's mean subtraction).

    Args:
        image_tensor: one network input, ``(3, H, W)`` or ``(1, 3, H, W)``.
        normalization: ``"embedded"`` (RGB in [0, 1] minus 0.5), ``"imagenet"`` (RGB in
            [0, 1], ImageNet mean/std) or ``"caffe"`` (BGR on 0..255 minus the caffe mean, as
            the official DeepLab-v2 loaders feed the network).

    Shape: -> ``(H, W, 3)`` float32 RGB in [0, 1].
    """
    x = as_numpy(image_tensor).astype(np.float32)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {x.shape}")
    x = x.transpose(1, 2, 0)
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    # Imported here: the dataset modules pull in PIL/torchvision, which plotting rarely needs.
    if normalization == "embedded":
        from segda.data.synthetic import IMAGE_MEAN

        rgb = x + IMAGE_MEAN
    elif normalization == "imagenet":
        from segda.data.real import IMAGENET_MEAN, IMAGENET_STD

        rgb = x * np.asarray(IMAGENET_STD, np.float32) + np.asarray(IMAGENET_MEAN, np.float32)
    else:
        from segda.data.real import CAFFE_MEAN_BGR

        bgr = x + np.asarray(CAFFE_MEAN_BGR, np.float32)  # mean is in B, G, R order
        rgb = bgr[..., ::-1] / 255.0
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def legend_patches(class_ids, class_names: Sequence[str] = CLASS_NAMES) -> list:
    """``matplotlib.patches.Patch`` handles (palette colour + name) for ``ax.legend(handles=...)``.

    The ignore id (255) becomes a black "ignore" patch; other unknown ids are skipped.
    """
    from matplotlib.patches import Patch

    handles = []
    for c in class_ids:
        c = int(c)
        if 0 <= c < min(len(class_names), NUM_CLASSES):
            handles.append(Patch(color=np.asarray(PALETTE[c]) / 255.0, label=class_names[c]))
        elif c == IGNORE_INDEX:
            handles.append(Patch(color="black", label="ignore"))
    return handles


def _show_cell(ax, cell, cmap: str, value_range: tuple[float, float]):
    """Draw one grid cell: RGB as is, integer maps colourised, float maps with ``cmap`` over
    ``value_range``. Returns the image of a float map (for the colour bar), else ``None``."""
    ax.set_xticks([])
    ax.set_yticks([])
    if cell is None:
        ax.set_frame_on(False)
        return None
    arr = as_numpy(cell)
    if arr.ndim == 2 and np.issubdtype(arr.dtype, np.integer):
        arr = colorize(arr)
    if arr.ndim == 2:
        return ax.imshow(arr, cmap=cmap, vmin=value_range[0], vmax=value_range[1],
                         interpolation="nearest")
    ax.imshow(arr, interpolation="nearest")
    return None


def _is_label_map(arr: np.ndarray) -> bool:
    return arr.ndim == 2 and np.issubdtype(arr.dtype, np.integer)


def palette_classes(rgb) -> list[int] | None:
    """The classes of a label map passed already colourised (:func:`colorize`): a uint8 RGB
    image every pixel of which is a palette colour or black (ignore); ``None`` for any other
    image (a photograph holds colours outside the palette)."""
    arr = as_numpy(rgb)
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        return None
    lookup = {tuple(int(v) for v in PALETTE[c]): c for c in range(NUM_CLASSES)}
    found = set()
    for colour in map(tuple, np.unique(arr.reshape(-1, 3), axis=0).tolist()):
        if colour == (0, 0, 0):
            found.add(IGNORE_INDEX)
            continue
        if colour not in lookup:
            return None
        found.add(lookup[colour])
    return sorted(found)


def _classes_shown(cells: Sequence[np.ndarray]) -> list[int]:
    """The classes of every label map among ``cells``, integer or already colourised."""
    found: set[int] = set()
    for cell in cells:
        if _is_label_map(cell):
            found |= {int(x) for x in np.unique(cell)}
        else:
            found |= set(palette_classes(cell) or ())
    return sorted(found)


def _is_value_map(arr: np.ndarray) -> bool:
    return arr.ndim == 2 and not np.issubdtype(arr.dtype, np.integer)


def _cell_label(row: int, column: int) -> str:
    return f"cell {row} {column}"


def grid_cell(fig, row: int, column: int):
    """The axes of :func:`show_grid`'s cell (``row``, ``column``) of ``rows``, wherever its
    band put it."""
    label = _cell_label(row, column)
    return next(ax for ax in fig.axes if ax.get_label() == label)


def show_grid(
    rows: Sequence[Sequence],
    titles: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    cell_width: float = 3.0,
    cmap: str = "viridis",
    *,
    value_range: tuple[float, float] | None = (0.0, 1.0),
    value_label: str = "value",
    legend: str | Sequence[int] | None = "auto",
    max_columns: int | None = None,
):
    """A qualitative grid: one row per image, one column per view.

    Cells are ``(H, W, 3)`` RGB images (float in [0, 1] or uint8), ``(H, W)`` integer label
    maps (colourised), ``(H, W)`` float maps (drawn with ``cmap``, e.g. entropy) or ``None``
    (left blank). Rows may be ragged; the grid is as wide as the longest row.

    Every float map shares one colour scale, drawn as a colour bar labelled ``value_label``
    and its range, so a map is never read without its scale. Label maps get a class legend.

    A grid with more columns than fit in :data:`MAX_WIDTH_PX` is split into bands of columns
    drawn one under the other (each band: every image, its column titles on top, the row
    labels on the left), so that the figure keeps its width and its cells their size.

    Args:
        rows: the cells, row by row.
        titles: column titles (shown above the first row of each band).
        row_labels: one label per row (shown left of the first column of each band).
        cell_width: inches per column; the height follows the first cell's aspect ratio.
        value_range: ``(low, high)`` of the float maps' colour scale; ``None``: the smallest
            and largest value over all of them (for maps whose values are far below 1).
        value_label: what the float maps hold (the colour bar's label, before its range).
        legend: ``"auto"``: the classes present in the label maps (integer, or colourised by
            :func:`colorize`); a list of class ids; ``None``: no legend.
        max_columns: columns per band; default as many as fit in :data:`MAX_WIDTH_PX`.
    """
    nrows = len(rows)
    ncols = max((len(r) for r in rows), default=0)
    if nrows == 0 or ncols == 0:
        raise ValueError("show_grid needs at least one cell")
    cells = [as_numpy(c) for r in rows for c in r if c is not None]
    first = cells[0] if cells else np.zeros((1, 1))
    values = [c for c in cells if _is_value_map(c)]
    if value_range is None and values:
        value_range = (float(min(np.nanmin(v) for v in values)),
                       float(max(np.nanmax(v) for v in values)))
    value_range = value_range or (0.0, 1.0)
    if legend == "auto":
        legend = _classes_shown(cells)
    handles = legend_patches(legend) if legend else []
    bar_width = 1.0 if values else 0.0
    fit = max_columns or max(1, int((MAX_WIDTH_IN - bar_width - 0.3) // cell_width))
    bands = _chunks(range(ncols), fit)
    band_cols = len(bands[0])
    if max_columns is None:  # a band of few columns may not fill the width: cells shrink to fit
        cell_width = min(cell_width, (MAX_WIDTH_IN - bar_width - 0.3) / band_cols)
    aspect = first.shape[0] / first.shape[1]
    legend_rows = -(-len(handles) // 6) if handles else 0
    figsize = (cell_width * band_cols + bar_width,
               ((cell_width * aspect + 0.1) * nrows + (0.45 if titles else 0.0)) * len(bands)
               + 0.2 + 0.3 * legend_rows)
    fig, axes = new_figure(nrows * len(bands), band_cols, figsize, layout="constrained")
    mappable = None
    for b, band in enumerate(bands):
        for i in range(nrows):
            for k in range(band_cols):
                j = band[k] if k < len(band) else ncols
                ax = axes[b * nrows + i, k]
                drawn = _show_cell(ax, rows[i][j] if j < len(rows[i]) else None, cmap,
                                   value_range)
                mappable = mappable or drawn
                if j < ncols:
                    ax.set_label(_cell_label(i, j))
                if i == 0 and titles is not None and j < min(len(titles), ncols):
                    ax.set_title(titles[j], fontsize=9)
            if row_labels is not None and i < len(row_labels):
                axes[b * nrows + i, 0].set_ylabel(row_labels[i], fontsize=9)
    if mappable is not None:
        fig.colorbar(mappable, ax=axes, shrink=0.9,
                     label=range_label(value_label, *value_range))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6),
                   fontsize=8, frameon=False)
    return fig


def _history_frame(history):
    import pandas as pd

    return history.copy() if isinstance(history, pd.DataFrame) else pd.DataFrame(list(history))


def loss_axis_label(key: str) -> str:
    """The y-axis label of the logged loss term ``key`` (:data:`LOSS_AXIS_LABELS`)."""
    return next((text for prefix, text in LOSS_AXIS_LABELS if key.startswith(prefix)), "loss")


def plot_loss_curves(
    history,
    keys: Sequence[str] | None = None,
    smooth: int | None = None,
    x: str = "iteration",
    ncols: int = 3,
    gan_loss: str = "bce",
):
    """One panel per loss term of a training history (:meth:`RunResult.history_frame`).

    Terms live on different scales (segmentation CE ~1, weighted adversarial terms ~1e-3), so
    each gets its own axes, with a y-axis label saying what the term is. A discriminator's
    loss on one domain (``disc_<level>_src`` / ``_tgt``) gets a dotted line at its chance
    level (:data:`DISC_CHANCE_LOSS`): above it the discriminator does worse than one that
    cannot tell the domains apart, well below it it tells them apart.

    Args:
        history: a DataFrame or a list of dicts (``RunResult.state.history``).
        keys: the columns to plot; default every numeric column except ``x`` and the step
            diagnostics (``diag_*``, drawn by :func:`plot_step_diagnostics`).
        smooth: rolling-mean window; the raw curve is then drawn faintly behind the smooth one.
        x: the x-axis column (the row number when absent).
        ncols: panels per row.
        gan_loss: the run's ``method.gan_loss`` (``"bce"`` or ``"lsgan"``), which sets the
            chance level.
    """
    df = _history_frame(history)
    xs = df[x] if x in df.columns else df.index.to_series()
    if keys is None:
        keys = [c for c in df.select_dtypes("number").columns
                if c != x and not c.startswith("diag_")]
    keys = list(keys)
    if not keys:
        raise ValueError("no loss columns to plot")
    ncols = max(1, min(ncols, len(keys), int(MAX_WIDTH_IN // 4.0)))
    nrows = -(-len(keys) // ncols)
    fig, axes = new_figure(nrows, ncols, (4.0 * ncols, 2.8 * nrows))
    for ax, key in zip(axes.flat, keys, strict=False):
        values = df[key].astype(float)
        valid = values.notna().to_numpy()  # terms logged only at some iterations
        if smooth and smooth > 1:
            ax.plot(xs[valid], values[valid], alpha=0.3, linewidth=0.8)
            ax.plot(xs[valid], values[valid].rolling(smooth, min_periods=1).mean(), linewidth=1.5)
        else:
            ax.plot(xs[valid], values[valid], linewidth=1.2)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel(x)
        ax.set_ylabel(loss_axis_label(key), fontsize=8)
        if key.startswith("disc_") and key.endswith(("_src", "_tgt")):
            ax.axhline(DISC_CHANCE_LOSS[gan_loss], color="grey", linestyle=":", linewidth=1.2,
                       label=f"chance level {DISC_CHANCE_LOSS[gan_loss]:.3f}")
            ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.remove()
    fig.tight_layout()
    return fig


def plot_step_diagnostics(history, smooth: int = 10, x: str = "iteration"):
    """What ``run.diagnostics`` logged (:data:`segda.step.DIAGNOSTICS`), in two panels.

    Left: each discriminator's accuracy on source and on target output cells over training
    (0.5 = chance: it cannot tell the domains apart; 1 = it always can). Right: the L2 norm of
    the segmenter's gradient from the source terms and from the target terms (log scale): how
    hard each pulls on the weights. Curves are rolling means over ``smooth`` iterations.
    """
    df = _history_frame(history)
    xs = df[x] if x in df.columns else df.index.to_series()
    acc = [c for c in df.columns if c.startswith("diag_dacc_")]
    grads = [c for c in ("diag_grad_source", "diag_grad_target") if c in df.columns]
    if not acc and not grads:
        raise ValueError("no diagnostics in this history: train with run.diagnostics = true")
    fig, axes = new_figure(1, 2, (10.0, 3.2))
    ax_acc, ax_grad = axes[0]
    names = {"src": "source cells", "tgt": "target cells"}
    for col in acc:
        _, _, level, domain = col.split("_")
        values = df[col].astype(float).rolling(max(smooth, 1), min_periods=1).mean()
        ax_acc.plot(xs, values, label=f"D {level}: {names.get(domain, domain)}", linewidth=1.3)
    if acc:
        ax_acc.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance")
        ax_acc.set_ylim(0, 1.02)
        ax_acc.legend(fontsize=8)
    else:
        ax_acc.text(0.5, 0.5, "no discriminator", ha="center", va="center", transform=ax_acc.transAxes)
    ax_acc.set_title("discriminator accuracy", fontsize=10)
    ax_acc.set_xlabel(x)
    ax_acc.set_ylabel("share of cells right")
    labels = {"diag_grad_source": "source terms (segmentation)", "diag_grad_target": "target terms"}
    for col in grads:
        values = df[col].astype(float).rolling(max(smooth, 1), min_periods=1).mean()
        ax_grad.plot(xs, values, label=labels[col], linewidth=1.3)
    ax_grad.set_yscale("log")
    ax_grad.set_title("gradient norm on the segmenter", fontsize=10)
    ax_grad.set_xlabel(x)
    ax_grad.set_ylabel("L2 norm (log scale)")
    ax_grad.legend(fontsize=8)
    for ax in (ax_acc, ax_grad):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_target_curves(curves: Mapping[str, object], history=None, smooth: int = 10):
    """When the gain arrives (:mod:`segda.curves`): each run's target mIoU (%) and mean
    normalised entropy (0 to 1) of its target predictions after every chunk of training, one
    line per run (``curves``: ``{name: curve DataFrame}``; a ``None`` curve is left out).
    With ``history`` (a run's loss history with ``run.diagnostics``), a third panel shows that
    run's discriminator accuracy on target cells over the same iterations (0.5 = chance)."""
    shown = {name: c for name, c in curves.items() if c is not None}
    if not shown:
        raise ValueError("no curve to plot: train the rows with curve_every (segda.curves)")
    acc = [] if history is None else [c for c in _history_frame(history).columns
                                      if c.startswith("diag_dacc_") and c.endswith("_tgt")]
    panels = 3 if acc else 2
    fig, axes = new_figure(1, panels, (4.2 * panels, 3.3))
    ax_miou, ax_ent = axes[0][0], axes[0][1]
    for name, curve in shown.items():
        ax_miou.plot(curve["iteration"], curve["target_miou"], marker="o", label=name)
        ax_ent.plot(curve["iteration"], curve["target_entropy"], marker="o", label=name)
    images = sorted({int(n) for c in shown.values() for n in c["images"]})
    on = f"{'/'.join(map(str, images))} target val images"
    ax_miou.set_title(f"target mIoU ({on})", fontsize=10)
    ax_miou.set_ylabel("mIoU (%)")
    ax_ent.set_title("mean normalised entropy on target", fontsize=10)
    ax_ent.set_ylabel("entropy (0 to 1)")
    if acc:
        ax_d = axes[0][2]
        df = _history_frame(history)
        for col in acc:
            values = df[col].astype(float).rolling(max(smooth, 1), min_periods=1).mean()
            ax_d.plot(df["iteration"], values, label=f"D {col.split('_')[2]}: target cells")
        ax_d.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance")
        ax_d.set_ylim(0, 1.02)
        ax_d.set_title("discriminator accuracy on target", fontsize=10)
        ax_d.set_ylabel("share of cells right")
        ax_d.legend(fontsize=8)
    for ax in axes[0]:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    handles, labels = ax_miou.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 4), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return fig


def _occurring(series: Mapping[str, np.ndarray], absent) -> list[int]:
    """The classes for which some series has a value (``absent(values)`` is False somewhere):
    a class the benchmark never draws gets no empty slot on the axis."""
    stacked = np.stack([np.asarray(v, dtype=float) for v in series.values()])
    keep = [c for c in range(stacked.shape[1]) if not np.all(absent(stacked[:, c]))]
    return keep or list(range(stacked.shape[1]))


def _grouped_bars(ax, series: Mapping[str, np.ndarray], class_names: Sequence[str],
                  classes: Sequence[int] | None = None, slots: int | None = None) -> None:
    """Bars per class (the ``classes`` listed, all by default), one bar per series; a single
    series is drawn in the palette colours. ``slots``: the number of class positions the axis
    spans (panels of one figure share a bar width)."""
    classes = list(range(len(class_names))) if classes is None else list(classes)
    class_names = [class_names[c] for c in classes]
    n = len(series)
    width = 0.8 / max(n, 1)
    pos = np.arange(len(class_names))
    for k, (name, values) in enumerate(series.items()):
        values = np.asarray(values, dtype=float)[classes]
        offset = (k - (n - 1) / 2) * width
        colour = None
        if n == 1 and max(classes) < NUM_CLASSES:
            colour = [np.asarray(PALETTE[c]) / 255.0 for c in classes]
        ax.bar(pos + offset, values, width, label=name, color=colour,
               edgecolor="black", linewidth=0.3)
    ax.set_xticks(pos)
    ax.set_xticklabels(class_names, rotation=45, ha="right", fontsize=8)
    ax.set_xlim(-0.6, (slots or len(class_names)) - 0.4)
    ax.grid(axis="y", alpha=0.3)


def _bar_figure(series: Mapping[str, np.ndarray], class_names: Sequence[str],
                classes: Sequence[int], ylabel: str, *, ylim=None, log: bool = False):
    """Grouped bars per class in as many rows of panels as keep the figure within
    :data:`MAX_WIDTH_PX` with every bar at least ~0.2 inch wide; the legend above the panels."""
    n = max(len(series), 1)
    per_class = 0.2 * n + 0.25  # inches: n bars and the gap between classes
    panels = _chunks(classes, int((MAX_WIDTH_IN - 1.0) // per_class))
    slots = len(panels[0])
    width = max(8.0, min(MAX_WIDTH_IN, per_class * slots + 1.0))
    legend_rows = -(-len(series) // 3) if len(series) > 1 else 0
    fig, axes = new_figure(len(panels), 1, (width, 3.0 * len(panels) + 0.3 * legend_rows),
                           layout="constrained")
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        _grouped_bars(ax, series, class_names, panel, slots)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        elif ylim is not None:
            ax.set_ylim(*ylim)
    if len(series) > 1:
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside upper center", ncol=min(len(series), 3),
                   fontsize=8, frameon=False)
    elif series:
        axes[0, 0].set_title(next(iter(series)), fontsize=9)
    return fig


def plot_per_class_bars(ious: Mapping[str, np.ndarray], class_names: Sequence[str] = CLASS_NAMES):
    """Grouped bars of per-class IoU (in %) for several results; the legend gives each mIoU.

    Args:
        ious: result name -> ``(num_classes,)`` IoU fractions in [0, 1] (``EvalResult.iou``);
            NaN (class absent) draws no bar; a class NaN in every result is left out.
    """
    series = {}
    for name, iou in ious.items():
        iou = 100.0 * np.asarray(iou, dtype=float)
        miou = np.nanmean(iou) if not np.all(np.isnan(iou)) else float("nan")
        series[f"{name} (mIoU {miou:.1f})"] = iou
    classes = _occurring(series, np.isnan)
    return _bar_figure(series, class_names, classes, "IoU (%)", ylim=(0, 100))


def plot_iou_heatmap(df, cmap: str = "viridis", digits: int = 1):
    """Heat map of an :func:`segda.metrics.iou_table` (rows: results, columns: classes, mIoU).

    Values are in %, annotated in each cell; NaN cells are blank.
    """
    values = df.to_numpy(dtype=float)
    nrows, ncols = values.shape
    fig, axes = new_figure(1, 1, (max(6.0, 0.55 * ncols + 2.0), max(2.0, 0.45 * nrows + 1.5)))
    ax = axes[0, 0]
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(ncols))
    ax.set_xticklabels([str(c) for c in df.columns], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(nrows))
    ax.set_yticklabels([str(r) for r in df.index], fontsize=8)
    for i in range(nrows):
        for j in range(ncols):
            if np.isfinite(values[i, j]):
                # Dark text on the bright end of the colour map, white elsewhere.
                colour = "black" if values[i, j] > 60 else "white"
                ax.text(j, i, f"{values[i, j]:.{digits}f}", ha="center", va="center",
                        fontsize=7, color=colour)
    fig.colorbar(im, ax=ax, label="IoU (%)")
    fig.tight_layout()
    return fig


def plot_class_frequencies(
    freqs: Mapping[str, np.ndarray],
    class_names: Sequence[str] = CLASS_NAMES,
    log: bool = False,
):
    """Grouped bars of each class's pixel share per dataset/domain (counts are normalised).

    Args:
        freqs: name -> ``(num_classes,)`` pixel counts or shares; a class with no pixel in
            any series is left out.
        log: logarithmic y axis (rare classes are otherwise invisible next to road).
    """
    series = {}
    for name, f in freqs.items():
        f = np.asarray(f, dtype=float)
        total = f.sum()
        series[name] = 100.0 * f / total if total > 0 else f
    classes = _occurring(series, lambda v: v == 0)
    return _bar_figure(series, class_names, classes, "pixel share (%)", log=log)


def plot_discriminator_scores(scores: Mapping[str, np.ndarray], bins: int = 40):
    """Histograms of a discriminator's verdicts (in [0, 1], 1 = "target") per domain; the
    legend gives the share of cells on the domain's side of 0.5 (the discriminator's accuracy
    there: below 0.5 for source, above for target, recognised by the name's first word).

    Args:
        scores: name (e.g. ``"source val"``, ``"target val"``) -> the flat scores of
            :func:`segda.evaluate.discriminator_scores`.
    """
    fig, axes = new_figure(1, 1, (7.0, 3.6), layout="constrained")
    ax = axes[0, 0]
    edges = np.linspace(0.0, 1.0, bins + 1)
    for name, values in scores.items():
        values = np.asarray(values, dtype=float)
        target = name.lower().startswith("target")
        right = float(np.mean(values > 0.5) if target else np.mean(values < 0.5))
        ax.hist(values, bins=edges, alpha=0.55, label=f"{name} ({100 * right:.0f}% on its side)")
    ax.axvline(0.5, color="black", linewidth=0.8, linestyle="--")
    ax.set_xlabel('discriminator output (0 = "source", 1 = "target")')
    ax.set_ylabel("output cells")
    fig.legend(loc="outside upper center", ncol=min(len(scores), 2), fontsize=8, frameon=False)
    return fig


def plot_against_reference(table, column: str = "gain"):
    """A notebook's own run beside the reference (:func:`segda.results.against_reference`):
    per row, the reference's mean over seeds (bar) with its std (black whisker), its range of
    seeds (grey whisker) and the band "within reference range" checks (dotted: the range
    widened by the tables' resolution), and this run (red diamond).

    Args:
        column: ``"gain"`` (over the control, :func:`segda.rows.control`) or ``"target mIoU"``.
    """
    rows = list(table.index)
    x = np.arange(len(rows))
    if column == "gain":
        mean, std = table["reference gain"], table["reference gain std"]
        low, high, own = table["reference gain min"], table["reference gain max"], table["gain (this run)"]
        label = "target mIoU gain over the control (points)"
    else:
        mean, std = table["reference mean"], table["reference std"]
        low = high = None
        own, label = table["this run"], "target mIoU (%)"
    seeds = int(table["reference seeds"].max()) if len(table) else 0
    fig, axes = new_figure(1, 1, (min(MAX_WIDTH_IN, max(7.0, 1.1 * len(rows) + 2)), 4.4),
                           layout="constrained")
    ax = axes[0, 0]
    ax.bar(x, mean, color="#9ecae1", label=f"reference: mean of {seeds} seeds")
    ax.errorbar(x, mean, yerr=np.nan_to_num(std), fmt="none", ecolor="black", capsize=4,
                label="reference: +/- std over seeds")
    if low is not None:
        ax.vlines(x + 0.18, low, high, color="grey", linewidth=2, label="reference: range of seeds")
    if column == "gain" and "range checked low" in table:
        # What "within reference range" checks: the seeds' range widened by the tables'
        # resolution, so a run drawn outside the grey range but inside this band is "inside".
        ax.vlines(x + 0.26, table["range checked low"], table["range checked high"],
                  color="grey", linewidth=1, linestyles="dotted",
                  label="range checked: seeds' range +/- 0.1 (print resolution)")
    ax.scatter(x, own, marker="D", color="#d62728", zorder=3, label="this notebook's run")
    for xi, m, s, o in zip(x, mean, np.nan_to_num(std), own, strict=True):
        ax.annotate(f"ref {m:+.1f}\u00b1{s:.1f}\nrun {o:+.1f}", (xi, max(m + s, o, 0.0)),
                    textcoords="offset points", xytext=(0, 4), ha="center", fontsize=7)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.margins(y=0.25)  # room for the labels
    ax.set_xlim(-0.7, len(rows) - 0.3)  # the outer rows' labels stay inside the axes
    ax.set_xticks(x)
    ax.set_xticklabels(rows, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(label)
    fig.legend(loc="outside upper center", ncol=3, fontsize=7, frameon=False)
    return fig


def plot_lambda_sweep(sweep):
    """Target mIoU gain over the control (source-only of the same seed) against the
    adversarial weight: one point per seed (grey) and the mean (line), from
    :func:`segda.results.lambda_sweep`."""
    fig, axes = new_figure(1, 1, (5.5, 3.4))
    ax = axes[0, 0]
    ax.scatter(sweep["lambda_adv_main"], sweep["gain"], color="grey", s=14, label="one seed")
    mean = sweep.groupby("lambda_adv_main")["gain"].mean()
    ax.plot(mean.index, mean.values, marker="o", color="#1f77b4", label="mean over seeds")
    ax.axhline(0.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xscale("log")
    ax.set_xlabel("lambda_adv (main)")
    ax.set_ylabel("gain over the control (points)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _seed_gains(text) -> list[float]:
    """The per-seed gains of :func:`segda.results.study_table`'s "gains per seed" column
    (``"+1.2 / -0.3"``) as numbers; an empty cell gives none."""
    if not isinstance(text, str) or not text.strip():
        return []
    return [float(g) for g in text.split("/")]


def plot_study(table, title: str | None = None, study: Sequence | None = None,
               gains: Mapping[str, Sequence[float]] | None = None):
    """One study of the reference (:func:`segda.results.study_table`): per run, its mean gain
    over the control of the same setting (bar) and each seed's gain, paired with that seed's
    control (dots), with a zero line. Controls are not drawn (their gain is 0 by definition);
    each run's tick names its control.

    Args:
        table: :func:`segda.results.study_table`'s table (index: run names).
        title: the figure's title.
        study: the study's runs (``segda.experiments.STUDIES[name]``: objects with ``name``
            and ``control``); runs the table lacks keep their slot, marked "not in the
            reference". Without it, the table's rows that are not controls are drawn.
        gains: run name -> the gain of each seed (exact values); default: parsed from the
            table's "gains per seed" column (printed to 0.1 point).

    Raises:
        ValueError: when no run of the study (other than its controls) is in the table.
    """
    if study is not None:
        slots = [(r.name, r.control) for r in study if r.name != r.control]
    else:
        slots = [(name, row["control"]) for name, row in table.iterrows()
                 if row.get("verdict") != "the control"]
    present = [name for name, _ in slots if name in table.index]
    if not present:
        raise ValueError("no run of this study in the table (the reference lacks them: make suite)")
    fig, axes = new_figure(1, 1, (min(MAX_WIDTH_IN, max(5.0, 1.6 * len(slots) + 1.5)), 4.0),
                           layout="constrained")
    ax = axes[0, 0]
    x = np.arange(len(slots))
    labelled = set()  # each legend entry once

    def once(label: str) -> str | None:
        if label in labelled:
            return None
        labelled.add(label)
        return label

    for xi, (name, _) in zip(x, slots, strict=True):
        if name not in table.index:
            ax.text(xi, 0.0, "not in the\nreference", ha="center", va="bottom", fontsize=7,
                    color="grey")
            continue
        mean = float(table.loc[name, "gain"])
        seeds = [float(g) for g in gains[name]] if gains is not None and name in gains \
            else _seed_gains(table.loc[name, "gains per seed"])
        if not np.isnan(mean):
            ax.bar(xi, mean, color="#9ecae1", width=0.6, label=once("mean over seeds"))
        if seeds:
            jitter = np.linspace(-0.12, 0.12, len(seeds)) if len(seeds) > 1 else np.zeros(1)
            ax.scatter(xi + jitter, seeds, color="#08306b", s=16, zorder=3,
                       label=once("one seed (paired with its control)"))
        top = max([0.0, *seeds] + ([] if np.isnan(mean) else [mean]))
        ax.annotate("no paired seeds" if np.isnan(mean) else f"{mean:+.1f}", (xi, top),
                    textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.margins(y=0.2)  # room for the labels
    ax.set_xticks(x)
    ax.set_xticklabels([f"{name}\nvs {control}" for name, control in slots], fontsize=7)
    ax.set_ylabel("gain over the control of the same setting (points)", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside upper center", ncol=2, fontsize=7, frameon=False)
    return fig


__all__ = [
    "NORMALIZATIONS", "as_numpy", "colorize",
    "denormalize_embedded", "dim_outside", "entropy_map", "highlight_class", "legend_patches",
    "new_figure", "overlay", "plot_against_reference", "plot_class_frequencies",
    "plot_discriminator_scores", "plot_lambda_sweep",
    "plot_iou_heatmap", "plot_loss_curves",
    "plot_per_class_bars", "plot_step_diagnostics", "plot_study", "show_grid", "to_display",
    "DPI", "MAX_WIDTH_PX", "DISC_CHANCE_LOSS", "grid_cell", "loss_axis_label", "palette_classes",
    "range_label",
]
