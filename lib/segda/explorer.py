"""An image explorer for notebooks: image, ground truth, prediction, entropy, discriminator map.

All computing lives in plain functions (:func:`predict`, :func:`compute_layer`,
:func:`layers_for`) that tests call without a browser; :func:`build_explorer` only wires them
to ipywidgets. Models predict through a :class:`segda.evaluate.Predictor` (``predictor``: one
for all models or one per model name, e.g. ``Predictor.from_config(run.config)``; default the
papers' protocol), on their own device. The explorer knows no method: what a discriminator sees
is computed by a function the caller passes (``disc_input_fn``) from the output upsampled the
predictor's way, by default the softmax of the main logits (AdaptSegNet's output-space input);
:func:`disc_input_for_method` adapts any row of :data:`segda.methods.METHODS`.

>>> box = build_explorer({"source_only": seg_a, "advent": seg_b}, target_val,
...                      discriminators={"advent": {"main": disc}},
...                      disc_input_fn={"advent": disc_input_for_method("advent")})
>>> box                                   # in a notebook: slider + dropdowns + figure
>>> fig = build_explorer(models, target_val, interactive=False)   # static grid (nbval)
"""

from __future__ import annotations

import functools
import traceback
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segda import evaluate, methods, viz
from segda.labels import CLASS_NAMES, IGNORE_INDEX
from segda.losses import upcast
from segda.models.outputs import SegOutput, upsample_logits

LAYERS: tuple[str, ...] = ("image", "ground truth", "prediction", "entropy", "discriminator")
NO_HIGHLIGHT = "none"
# Colour map of the scalar layers (entropy, discriminator output), both in [0, 1].
MAP_CMAP = "viridis"
# The scalar layers, what their colour bar says they hold, and its fixed range: a
# discriminator map spanning 0.49-0.51 is an unsure verdict, and a scale stretched to its
# values would paint it as a confident one.
SCALAR_LAYERS: dict[str, str] = {
    "entropy": "normalised entropy",
    "discriminator": "D output, 1 = target",
}
# The layers that belong to a model (the image and the ground truth belong to none).
MODEL_LAYERS: tuple[str, ...] = ("prediction", "entropy", "discriminator")
# Inches of the explorer's figure: one panel, or the two of "beside" together, so that the
# figure stays about 1000 pixels wide (viz.DPI) and a notebook shows it unshrunk.
FIGURE_WIDTH = {1: 6.5, 2: 10.0}
SCALAR_RANGE = (0.0, 1.0)

# What a discriminator sees, from the output with its logits upsampled to the image size.
DiscInputFn = Callable[[SegOutput], torch.Tensor]
Predictors = evaluate.Predictor | Mapping[str, evaluate.Predictor] | None


def softmax_disc_input(out: SegOutput) -> torch.Tensor:
    """Default discriminator input: softmax of the (upsampled) main logits.

    Shape: -> ``(N, C, H, W)``.
    """
    return methods.disc_input(methods.METHODS["output_adv"], out, "main")


def disc_input_for_method(method, level: str = "main") -> DiscInputFn:
    """A ``disc_input_fn`` computing exactly what ``method``'s discriminator sees in training.

    Args:
        method: a :class:`segda.methods.Method` or its name in ``METHODS``.
        level: the discriminator's level, ``"main"`` or ``"aux"``.
    """
    m = methods.get(method) if isinstance(method, str) else method

    def fn(out: SegOutput) -> torch.Tensor:
        return methods.disc_input(m, out, level)

    return fn


@dataclass
class Prediction:
    """One model's outputs on one image, kept on the CPU for display.

    Attributes:
        logits: main-head logits upsampled to the image size, ``(C, H, W)`` float32.
        disc: sigmoid of the main-level discriminator's output upsampled to the image size,
            ``(H, W)`` float32 in [0, 1] (near 1 = "looks like target"); ``None`` when the
            method has no discriminator.
    """

    logits: torch.Tensor
    disc: torch.Tensor | None = None

    @property
    def label(self) -> np.ndarray:
        """Arg-max class per pixel, ``(H, W)`` int64."""
        return self.logits.argmax(0).numpy()


class PredictionCache:
    """A small least-recently-used store of :class:`Prediction` keyed by ``(model, index)``.

    Bounded because full-resolution logits are large (19 x 512 x 1024 float32 = 40 MB).
    """

    def __init__(self, maxsize: int = 32) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[Hashable, Prediction] = OrderedDict()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, key: Hashable) -> Prediction:
        value = self._items[key]
        self._items.move_to_end(key)
        return value

    def __setitem__(self, key: Hashable, value: Prediction) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.maxsize:
            self._items.popitem(last=False)

    def keys(self) -> list[Hashable]:
        return list(self._items)

    def clear(self) -> None:
        self._items.clear()


def _device_of(module: nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def predict(
    model: nn.Module,
    image: torch.Tensor,
    discriminator: nn.Module | None = None,
    disc_input_fn: DiscInputFn | None = None,
    predictor: evaluate.Predictor | None = None,
) -> Prediction:
    """Run ``model`` (and the main-level ``discriminator``) on one network input, in eval mode,
    the way ``predictor`` says (upsampling, autocast; default the papers' protocol), on the
    model's own device.

    Shape: image ``(3, H, W)`` (normalised as the model expects) -> logits ``(C, H, W)``,
    disc ``(H, W)``.
    """
    spec = predictor or evaluate.Predictor(device=_device_of(model))
    with evaluate.eval_mode(model, discriminator):
        x = image.unsqueeze(0).to(_device_of(model))
        size = (x.shape[-2], x.shape[-1])
        out, logits = spec.predict(model, x, size)
        disc = None
        if discriminator is not None:
            d_in = (disc_input_fn or softmax_disc_input)(out.upsampled(size, spec.align_corners))
            with torch.autocast(x.device.type, torch.bfloat16, enabled=spec.amp):
                d_out = discriminator(d_in.to(_device_of(discriminator)))
            # The D output is at 1/32 of the input; upsample its logits, then squash.
            disc = torch.sigmoid(upsample_logits(upcast(d_out), size, spec.align_corners))[0, 0].cpu()
    return Prediction(logits=logits[0].cpu(), disc=disc)


def class_id(highlight: int | str | None) -> int | None:
    """``None``/``"none"`` -> ``None``; a class name or train id -> the train id."""
    if highlight is None or highlight == NO_HIGHLIGHT:
        return None
    if isinstance(highlight, str):
        return CLASS_NAMES.index(highlight)
    return int(highlight)


def _resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map to the image size (full-resolution labels)."""
    if label.shape == size:
        return label
    t = torch.as_tensor(label)[None, None].float()
    return F.interpolate(t, size=size, mode="nearest")[0, 0].long().numpy()


def _map_to_rgb(values: np.ndarray, cmap: str = MAP_CMAP) -> np.ndarray:
    from matplotlib import colormaps

    return colormaps[cmap](np.clip(values, 0.0, 1.0))[..., :3].astype(np.float32)


def compute_layer(
    layer: str,
    image01: np.ndarray,
    label: np.ndarray | torch.Tensor | None = None,
    prediction: Prediction | None = None,
    highlight: int | str | None = None,
) -> np.ndarray:
    """The array one explorer layer shows (pure: no model, no widgets).

    Args:
        layer: one of :data:`LAYERS`.
        image01: the displayed image, ``(H, W, 3)`` float in [0, 1].
        label: ground truth ``(h, w)`` train ids (resized to the image size by nearest
            neighbour) or ``None`` for unlabelled data.
        prediction: the model's :class:`Prediction`; needed for the model layers.
        highlight: a class (name or train id) to keep bright; other pixels are dimmed. The
            class mask comes from the ground truth for "image" and "ground truth" (from the
            prediction when there is no label) and from the prediction for the model layers.

    Returns:
        ``(H, W, 3)`` float32 RGB in [0, 1] for "image", "ground truth", "prediction" and for
        any highlighted layer; ``(H, W)`` float32 in [0, 1] for "entropy" and "discriminator".
    """
    if layer not in LAYERS:
        raise ValueError(f"unknown layer {layer!r}; choose one of {LAYERS}")
    size = image01.shape[:2]
    gt = None if label is None else _resize_label(np.asarray(viz.as_numpy(label)), size)
    if layer not in ("image", "ground truth") and prediction is None:
        raise ValueError(f"layer {layer!r} needs a prediction")

    if layer == "image":
        out = np.asarray(image01, dtype=np.float32)
    elif layer == "ground truth":
        if gt is None:
            raise ValueError("this dataset has no labels")
        out = viz.colorize(gt).astype(np.float32) / 255.0
    elif layer == "prediction":
        out = viz.colorize(prediction.label).astype(np.float32) / 255.0
    elif layer == "entropy":
        out = viz.entropy_map(prediction.logits, kind="logits")
    else:
        if prediction.disc is None:
            raise ValueError("this method has no discriminator")
        out = prediction.disc.numpy().astype(np.float32)

    cid = class_id(highlight)
    if cid is None:
        return out
    use_gt = layer in ("image", "ground truth") and gt is not None
    source = gt if use_gt else (prediction.label if prediction is not None else None)
    if source is None:
        raise ValueError("highlighting needs a label or a prediction")
    rgb = _map_to_rgb(out) if out.ndim == 2 else out
    return viz.dim_outside(rgb, viz.highlight_class(source, cid))


def highlight_mask(layer: str, has_label: bool = True) -> str:
    """Which map a highlighted class is cut from on ``layer`` (:func:`compute_layer`'s rule):
    ``"ground truth"`` for the image and the ground truth of labelled data, ``"prediction"``
    otherwise (the model layers, and unlabelled data)."""
    return "ground truth" if layer in ("image", "ground truth") and has_label else "prediction"


def value_range_of(layer: str, prediction: Prediction | None) -> tuple[float, float] | None:
    """The smallest and largest value of a scalar layer (entropy, discriminator) of
    ``prediction``, before any highlight; ``None`` for the other layers."""
    if prediction is None or layer not in SCALAR_LAYERS:
        return None
    if layer == "entropy":
        values = viz.entropy_map(prediction.logits, kind="logits")
    elif prediction.disc is None:
        return None
    else:
        values = prediction.disc.numpy()
    return float(values.min()), float(values.max())


def beside_choice(
    main: str,
    other: str | None,
    layer: str,
    discriminators: Mapping[str, Mapping[str, nn.Module]] | None = None,
    has_labels: bool = True,
) -> tuple[str | None, str]:
    """The model the explorer draws beside ``main`` for ``layer``, and, when it draws none
    though one was chosen, why: ``(model or None, reason or "")``."""
    if other is None or other == NO_HIGHLIGHT:
        return None, ""
    if other == main:
        return None, (f"beside: {other!r} is the model of the first panel already; choose "
                      "another model to compare")
    if layer in ("image", "ground truth"):
        shared = [x for x in MODEL_LAYERS
                  if x in available_layers(main, discriminators, has_labels)
                  and x in available_layers(other, discriminators, has_labels)]
        return None, (f"beside: the {layer} belongs to no model, so {other!r} would show the "
                      f"same panel; choose a layer both models have ({', '.join(shared)})")
    if layer not in available_layers(other, discriminators, has_labels):
        return None, (f"beside: {other!r} has no main-level discriminator, so it has no "
                      f"{layer} map")
    return other, ""


def _as_model_dict(models) -> dict[str, nn.Module]:
    return {"model": models} if isinstance(models, nn.Module) else dict(models)


def _per_model(value, name: str):
    """A setting given for every model, or per model name (missing names: None)."""
    return value.get(name) if isinstance(value, Mapping) else value


def _normalization(dataset, normalization: str | None) -> str:
    # Registry datasets record their normalisation; the embedded benchmark does not.
    return normalization or getattr(dataset, "normalization", None) or "embedded"


def get_prediction(
    models: Mapping[str, nn.Module],
    dataset,
    index: int,
    method_name: str,
    discriminators: Mapping[str, Mapping[str, nn.Module]] | None = None,
    disc_input_fn: DiscInputFn | Mapping[str, DiscInputFn] | None = None,
    cache: PredictionCache | dict | None = None,
    item: dict | None = None,
    predictor: Predictors = None,
) -> Prediction:
    """:func:`predict` for ``models[method_name]`` on ``dataset[index]``, through ``cache``."""
    key = (method_name, index)
    if cache is not None and key in cache:
        return cache[key]
    item = dataset[index] if item is None else item
    disc = (discriminators or {}).get(method_name, {}).get("main")
    pred = predict(models[method_name], item["image"], disc, _per_model(disc_input_fn, method_name),
                   _per_model(predictor, method_name))
    if cache is not None:
        cache[key] = pred
    return pred


def layers_for(
    models,
    dataset,
    index: int,
    method_name: str,
    layer: str,
    highlight: int | str | None = None,
    discriminators: Mapping[str, Mapping[str, nn.Module]] | None = None,
    disc_input_fn: DiscInputFn | Mapping[str, DiscInputFn] | None = None,
    normalization: str | None = None,
    cache: PredictionCache | dict | None = None,
    predictor: Predictors = None,
) -> np.ndarray:
    """The array the explorer shows for one (image, method, layer, highlight) choice.

    Args:
        models: name -> segmenter (a single module is named ``"model"``).
        dataset: items ``{"image": (3, H, W), "label": (h, w) (optional), ...}``.
        index: the image.
        method_name: key of ``models`` (a method or a checkpoint).
        layer: one of :data:`LAYERS`.
        highlight: a class name or train id to keep bright, or ``None``/``"none"``.
        discriminators: name -> {level -> discriminator}; the ``"main"`` one is shown.
        disc_input_fn: ``SegOutput (logits upsampled to the image) -> D input``, or name ->
            such a function; default :func:`softmax_disc_input`.
        normalization: how the dataset normalised images (see :func:`segda.viz.to_display`);
            default the dataset's ``normalization`` attribute, else ``"embedded"``.
        cache: where predictions are kept per ``(method_name, index)``.
        predictor: how the models predict (:class:`segda.evaluate.Predictor`), or name -> one;
            default the papers' protocol.

    Returns: see :func:`compute_layer`.
    """
    models = _as_model_dict(models)
    if method_name not in models:
        raise KeyError(f"unknown model {method_name!r}; choose one of {sorted(models)}")
    item = dataset[index]
    # Display the item's own tensor: a dataset may flip it, so a separately loaded raw image
    # would not line up with the prediction.
    image01 = viz.to_display(item["image"], _normalization(dataset, normalization))
    label = item.get("label")
    needs_pred = layer in ("prediction", "entropy", "discriminator") or (
        class_id(highlight) is not None and label is None
    )
    pred = None
    if needs_pred:
        pred = get_prediction(
            models, dataset, index, method_name, discriminators, disc_input_fn, cache, item,
            predictor,
        )
    return compute_layer(layer, image01, label, pred, highlight)


def available_layers(
    method_name: str,
    discriminators: Mapping[str, Mapping[str, nn.Module]] | None,
    has_labels: bool = True,
) -> tuple[str, ...]:
    """The layers that make sense for a method: no "discriminator" without a main-level D,
    no "ground truth" on unlabelled data."""
    has_disc = "main" in (discriminators or {}).get(method_name, {})
    return tuple(
        layer for layer in LAYERS
        if (layer != "discriminator" or has_disc) and (layer != "ground truth" or has_labels)
    )


def present_classes(dataset, max_items: int = 20) -> list[int]:
    """The train ids that occur in the first ``max_items`` labels of ``dataset`` (the classes
    worth offering for highlighting; the embedded benchmark draws 10 of the 19)."""
    found: set[int] = set()
    for i in range(min(max_items, len(dataset))):
        label = dataset[i].get("label")
        if label is None:
            return list(range(len(CLASS_NAMES)))
        found |= {int(c) for c in np.unique(np.asarray(viz.as_numpy(label)))}
    return sorted(c for c in found if c != IGNORE_INDEX and c < len(CLASS_NAMES))


def layer_figure(
    arrays: np.ndarray | Sequence[np.ndarray],
    titles: str | Sequence[str] = "",
    legend_ids: Sequence[int] | None = None,
    scale_to_data: bool = False,
    value_label: str | None = None,
):
    """One layer (or the same layer of two models side by side) as a figure: a colour bar for
    scalar maps, a class legend for label maps.

    Args:
        arrays: ``(H, W)`` scalar maps or ``(H, W, 3)`` RGB images, one per panel.
        titles: one per panel.
        legend_ids: the classes the legend names (label maps).
        scale_to_data: colour the scalar maps over the values shown instead of over
            :data:`SCALAR_RANGE` (the explorer keeps the fixed range, so a flat map looks flat).
        value_label: what the scalar maps hold, written on the colour bar with its range. A
            highlighted scalar map arrives as RGB (coloured over :data:`SCALAR_RANGE`); given
            ``value_label`` it keeps its colour bar.
    """
    from matplotlib import cm, colors

    arrays = [arrays] if isinstance(arrays, np.ndarray) else list(arrays)
    titles = [titles] if isinstance(titles, str) else list(titles)
    h, w = arrays[0].shape[:2]
    width = FIGURE_WIDTH.get(len(arrays), viz.MAX_WIDTH_IN)
    has_bar = value_label is not None or any(a.ndim == 2 for a in arrays)
    panel = (width - (0.9 * len(arrays) if has_bar else 0.0)) / len(arrays)
    handles = viz.legend_patches(legend_ids) if legend_ids is not None and len(legend_ids) else []
    title_lines = max((t.count("\n") + 1 for t in titles), default=1)
    height = panel * h / w + 0.2 * title_lines + 0.2 + 0.25 * -(-len(handles) // 6)
    fig, axes = viz.new_figure(1, len(arrays), (width, height), layout="constrained")
    lo, hi = SCALAR_RANGE
    if scale_to_data and arrays[0].ndim == 2:
        lo, hi = min(float(a.min()) for a in arrays), max(float(a.max()) for a in arrays)
        hi = max(hi, lo + 1e-6)
    bar_label = viz.range_label(value_label or "value", lo, hi)
    for ax, array, title in zip(axes[0], arrays, titles, strict=True):
        ax.set_xticks([])
        ax.set_yticks([])
        if array.ndim == 2:
            im = ax.imshow(array, cmap=MAP_CMAP, vmin=lo, vmax=hi, interpolation="nearest")
            fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02, label=bar_label)
        else:
            ax.imshow(array, interpolation="nearest")
            if value_label is not None:  # a highlighted scalar map: the scale it was coloured on
                mappable = cm.ScalarMappable(colors.Normalize(lo, hi), MAP_CMAP)
                fig.colorbar(mappable, ax=ax, fraction=0.05, pad=0.02, label=bar_label)
        ax.set_title(title, fontsize=10)
    if handles:  # below the panels, inside the figure: the figure keeps its width
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6),
                   fontsize=8, frameon=False)
    return fig


def panel_title(
    name: str | None,
    layer: str,
    index: int,
    prediction: Prediction | None = None,
    highlight: int | str | None = None,
    has_label: bool = True,
) -> str:
    """The title of one explorer panel: the model (none on the image and ground truth, which
    belong to no model), the layer and the image; a scalar layer's actual value range (its
    colour scale is fixed to [0, 1]); the highlighted class and the map its mask comes from."""
    text = (f"{layer} | #{index}" if name is None or layer in ("image", "ground truth")
            else f"{name} | {layer} | #{index}")
    span = value_range_of(layer, prediction)
    if span is not None:
        text += f"\nvalues {span[0]:.3f} to {span[1]:.3f}"
    cid = class_id(highlight)
    if cid is not None:
        text += (f"\nhighlight {CLASS_NAMES[cid]} (mask: "
                 f"{highlight_mask(layer, has_label)})")
    return text


def explorer_grid(
    models,
    dataset,
    discriminators: Mapping[str, Mapping[str, nn.Module]] | None = None,
    indices: Sequence[int] | None = None,
    num_images: int = 3,
    num_models: int = 1,
    disc_input_fn: DiscInputFn | Mapping[str, DiscInputFn] | None = None,
    normalization: str | None = None,
    cache: PredictionCache | dict | None = None,
    predictor: Predictors = None,
):
    """Static explorer: rows are images, columns image, ground truth and, for each of the
    first ``num_models`` models, prediction, entropy and (with a D) discriminator map."""
    models = _as_model_dict(models)
    names = list(models)[:num_models]
    indices = list(indices) if indices is not None else list(range(min(num_images, len(dataset))))
    if cache is None:  # the legend and the value ranges reread the grid's predictions
        cache = PredictionCache(max(32, len(indices) * len(names)))
    has_labels = "label" in dataset[indices[0]] if indices else True
    columns: list[tuple[str | None, str]] = [(None, "image")]
    if has_labels:
        columns.append((None, "ground truth"))
    for name in names:
        columns += [(name, layer) for layer in available_layers(name, discriminators, has_labels)
                    if layer in ("prediction", "entropy", "discriminator")]
    rows = []
    for i in indices:
        rows.append([
            layers_for(models, dataset, i, name or names[0], layer, None, discriminators,
                       disc_input_fn, normalization, cache, predictor)
            for name, layer in columns
        ])
    # The label maps arrive colourised: the legend names the classes of the ground truths
    # and of every prediction shown.
    shown: set[int] = set()
    for i in indices:
        label = dataset[i].get("label")
        if label is not None:
            shown |= {int(c) for c in np.unique(np.asarray(viz.as_numpy(label)))}
        for name in names:
            pred = get_prediction(models, dataset, i, name, discriminators, disc_input_fn, cache,
                                  predictor=predictor)
            shown |= {int(c) for c in np.unique(pred.label)}
    legend = sorted(c for c in shown if c != IGNORE_INDEX and c < len(CLASS_NAMES))
    scalar = [SCALAR_LAYERS[layer] for _, layer in columns if layer in SCALAR_LAYERS]
    titles = [layer if name is None else f"{name}:\n{layer}" for name, layer in columns]
    # Many columns (several models) are wrapped into bands of rows by show_grid, which keeps
    # the figure within viz.MAX_WIDTH_PX.
    fig = viz.show_grid(rows, titles=titles, row_labels=[f"#{i}" for i in indices],
                        cmap=MAP_CMAP, cell_width=2.4,
                        value_range=SCALAR_RANGE,
                        value_label=" / ".join(dict.fromkeys(scalar)) or "value", legend=legend)
    # The colour scale is fixed to [0, 1]: each discriminator map says the values it spans.
    for r, i in enumerate(indices):
        for c, (name, layer) in enumerate(columns):
            if layer == "discriminator":
                pred = get_prediction(models, dataset, i, name, discriminators, disc_input_fn,
                                      cache, predictor=predictor)
                lo, hi = value_range_of(layer, pred)
                viz.grid_cell(fig, r, c).set_xlabel(f"{lo:.3f} to {hi:.3f}", fontsize=7)
    return fig


def _import_widgets():
    try:
        import ipywidgets
    except ImportError as exc:  # optional dependency (the "notebooks" extra)
        raise ImportError("the interactive explorer needs ipywidgets: pip install ipywidgets") from exc
    return ipywidgets


@functools.cache  # one class per process, built on first use
def _explorer_box_class():
    widgets = _import_widgets()

    class ExplorerBox(widgets.VBox):
        """The explorer's widget: controls on top, the figure below; holds the cache."""

        def setup(self, models, dataset, discriminators, disc_input_fn, normalization, cache,
                  predictor=None):
            self.models, self.dataset, self.predictor = models, dataset, predictor
            self.discriminators, self.disc_input_fn = discriminators, disc_input_fn
            self.normalization, self.cache = normalization, cache
            self.has_labels = "label" in dataset[0]
            self.last: np.ndarray | None = None
            self.error: str | None = None
            self._updating = False
            names = list(models)
            # The slider keeps a usable track in a narrow window (min_width); the number box
            # beside it picks an exact image, which a drag over hundreds of images cannot.
            self.index_slider = widgets.IntSlider(
                value=0, min=0, max=len(dataset) - 1, description="image",
                continuous_update=False, readout=False,
                layout=widgets.Layout(width="360px", min_width="240px"),
            )
            self.index_box = widgets.BoundedIntText(
                value=0, min=0, max=len(dataset) - 1, layout=widgets.Layout(width="80px"),
            )
            widgets.link((self.index_slider, "value"), (self.index_box, "value"))
            self.method_dropdown = widgets.Dropdown(options=names, value=names[0],
                                                    description="model")
            layers = available_layers(names[0], discriminators, self.has_labels)
            self.layer_dropdown = widgets.Dropdown(options=layers, value="prediction",
                                                   description="layer")
            classes = present_classes(dataset) if self.has_labels else range(len(CLASS_NAMES))
            self.highlight_dropdown = widgets.Dropdown(
                options=(NO_HIGHLIGHT, *(CLASS_NAMES[c] for c in classes)), value=NO_HIGHLIGHT,
                description="highlight",
            )
            # A second model beside the first, same image and layer.
            self.compare_dropdown = widgets.Dropdown(options=(NO_HIGHLIGHT, *names),
                                                     value=NO_HIGHLIGHT, description="beside")
            self.last_beside: np.ndarray | None = None
            self.beside_note, self.titles = "", []
            self.output = widgets.Output()
            # One row of controls that wraps onto more lines in a narrow window.
            wrap = widgets.Layout(display="flex", flex_flow="row wrap", align_items="center")
            image = widgets.HBox([self.index_slider, self.index_box])
            controls = widgets.HBox([image, self.method_dropdown, self.compare_dropdown,
                                     self.layer_dropdown, self.highlight_dropdown], layout=wrap)
            self.children = [controls, self.output]
            for w in (self.index_slider, self.layer_dropdown, self.highlight_dropdown,
                      self.compare_dropdown):
                w.observe(self._on_change, names="value")
            self.method_dropdown.observe(self._on_method, names="value")
            self.refresh()

        def _on_method(self, change) -> None:
            # The layer list depends on whether this method has a discriminator.
            layers = available_layers(change["new"], self.discriminators, self.has_labels)
            current = self.layer_dropdown.value
            self._updating = True
            try:
                self.layer_dropdown.options = layers
                self.layer_dropdown.value = current if current in layers else "prediction"
            finally:
                self._updating = False
            self.refresh()

        def _on_change(self, change) -> None:
            if not self._updating:
                self.refresh()

        def compute(self, name: str | None = None) -> np.ndarray:
            return layers_for(
                self.models, self.dataset, self.index_slider.value,
                name or self.method_dropdown.value, self.layer_dropdown.value,
                self.highlight_dropdown.value, self.discriminators, self.disc_input_fn,
                self.normalization, self.cache, self.predictor,
            )

        def _beside(self) -> str | None:
            """The model shown beside, when one is chosen and it has the current layer; the
            reason when it is not (kept in ``beside_note``, printed above the figure)."""
            other, self.beside_note = beside_choice(
                self.method_dropdown.value, self.compare_dropdown.value,
                self.layer_dropdown.value, self.discriminators, self.has_labels)
            return other

        def refresh(self) -> None:
            """Recompute the shown layer and redraw; errors are shown, not raised, since
            widget callbacks have nowhere visible to raise to."""
            from IPython.display import display

            index, name = self.index_slider.value, self.method_dropdown.value
            layer, highlight = self.layer_dropdown.value, self.highlight_dropdown.value
            with self.output:
                self.output.clear_output(wait=True)
                other = self._beside()
                try:
                    self.last = self.compute()
                    self.last_beside = None if other is None else self.compute(other)
                    self.error = None
                except Exception:  # reported in the output widget
                    self.error = traceback.format_exc()
                    print(self.error)
                    return
                shown = [n for n in (name, other) if n is not None]
                preds = {n: self.cache[(n, index)] for n in shown if (n, index) in self.cache}
                legend = None
                if layer in ("ground truth", "prediction"):
                    sources = ([p.label for p in preds.values()] if layer == "prediction"
                               else [np.asarray(viz.as_numpy(self.dataset[index]["label"]))])
                    legend = sorted({int(c) for src in sources for c in np.unique(src)}
                                    - {IGNORE_INDEX})
                self.titles = [panel_title(n, layer, index, preds.get(n), highlight,
                                           self.has_labels) for n in shown]
                if self.beside_note:
                    print(self.beside_note)
                arrays = [self.last] + ([] if other is None else [self.last_beside])
                display(layer_figure(arrays, self.titles, legend,
                                     value_label=SCALAR_LAYERS.get(layer)))

    return ExplorerBox


def build_explorer(
    models,
    dataset,
    discriminators: Mapping[str, Mapping[str, nn.Module]] | None = None,
    interactive: bool = True,
    *,
    disc_input_fn: DiscInputFn | Mapping[str, DiscInputFn] | None = None,
    normalization: str | None = None,
    num_images: int = 3,
    num_models: int = 1,
    cache_size: int = 32,
    predictor: Predictors = None,
):
    """The notebook explorer, or a static figure for papermill/nbval runs.

    Args:
        models: name -> segmenter (methods or checkpoints); a single module is ``"model"``.
        dataset: items ``{"image", "label" (optional), ...}``.
        discriminators: name -> {level -> discriminator} for methods that have them.
        interactive: ``True``: an ``ipywidgets.VBox`` with an image slider and its number
            box, model / beside / layer / highlight dropdowns (one row that wraps in a narrow
            window) and an ``Output`` holding the figure (attributes
            ``index_slider``, ``index_box``, ``method_dropdown``, ``compare_dropdown``, ``layer_dropdown``,
            ``highlight_dropdown``, ``output``, ``cache``, ``last`` and ``last_beside`` (the
            shown arrays), ``titles``, ``beside_note`` (why no second panel is drawn, or
            ``""``) and ``error``). Scalar maps keep a colour bar over [0, 1], highlighted or
            not, and their titles give the values they span. ``False``: a matplotlib Figure,
            ``num_images`` images x layers of the first ``num_models`` models.
        num_models: how many of ``models`` (in their order) the static figure shows; the
            interactive explorer offers them all.
        disc_input_fn, normalization, predictor: see :func:`layers_for`.
        cache_size: predictions kept (per model and image).
    """
    models = _as_model_dict(models)
    if not models:
        raise ValueError("build_explorer needs at least one model")
    cache = PredictionCache(cache_size)
    if not interactive:
        return explorer_grid(models, dataset, discriminators, None, num_images, num_models,
                             disc_input_fn, normalization, cache, predictor)
    box = _explorer_box_class()()
    box.setup(models, dataset, discriminators, disc_input_fn, normalization, cache, predictor)
    return box


__all__ = [
    "LAYERS", "NO_HIGHLIGHT", "SCALAR_LAYERS", "SCALAR_RANGE", "Prediction", "PredictionCache",
    "available_layers", "beside_choice", "build_explorer", "compute_layer",
    "disc_input_for_method", "explorer_grid", "get_prediction", "highlight_mask",
    "layer_figure", "layers_for", "panel_title", "predict", "present_classes",
    "softmax_disc_input", "value_range_of",
]
