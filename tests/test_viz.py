"""segda.viz and segda.explorer: arrays, figures and the explorer's logic, without a browser."""

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: no display in tests

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from segda import explorer, viz  # noqa: E402
from segda.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, PALETTE  # noqa: E402
from segda.metrics import iou_table  # noqa: E402
from segda.models import build_discriminator, build_segmenter  # noqa: E402

H, W = 32, 64


class TinyDataset:
    """Two items in the embedded benchmark's format: raw [0, 1] image minus 0.5, train ids."""

    def __init__(self, with_labels: bool = True) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = [torch.rand(3, H, W, generator=g) - 0.5 for _ in range(2)]
        self.labels = [torch.randint(0, NUM_CLASSES, (H, W), generator=g) for _ in range(2)]
        self.labels[0][:4] = IGNORE_INDEX
        self.with_labels = with_labels

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> dict:
        item = {"image": self.images[i], "index": i}
        if self.with_labels:
            item["label"] = self.labels[i]
        return item


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {"source_only": build_segmenter("small"), "output_adv": build_segmenter("small")}


@pytest.fixture(scope="module")
def discs():
    torch.manual_seed(1)
    return {"output_adv": {"main": build_discriminator("output", NUM_CLASSES, ndf=8)}}


@pytest.fixture(scope="module")
def dataset():
    return TinyDataset()


def test_colorize_maps_ids_to_palette_and_ignore_to_black():
    label = np.array([[0, 13, IGNORE_INDEX], [18, 2, 300]])
    rgb = viz.colorize(torch.as_tensor(label))
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == PALETTE[0]
    assert tuple(rgb[0, 1]) == PALETTE[13]
    assert tuple(rgb[1, 0]) == PALETTE[18]
    assert tuple(rgb[0, 2]) == (0, 0, 0)
    assert tuple(rgb[1, 2]) == (0, 0, 0)  # out-of-table ids are drawn as ignore


def test_overlay_blends_and_keeps_image_at_alpha_zero_and_on_ignore():
    image = np.random.default_rng(0).random((4, 5, 3)).astype(np.float32)
    label = np.full((4, 5), 13)
    label[0, 0] = IGNORE_INDEX
    np.testing.assert_allclose(viz.overlay(image, label, alpha=0.0), image, atol=1e-6)
    full = viz.overlay(image, label, alpha=1.0)
    np.testing.assert_allclose(full[1, 1], np.array(PALETTE[13]) / 255.0, atol=1e-6)
    np.testing.assert_allclose(full[0, 0], image[0, 0], atol=1e-6)


def test_entropy_map_uniform_is_one_and_confident_is_zero():
    np.testing.assert_allclose(viz.entropy_map(torch.zeros(NUM_CLASSES, 3, 4)), 1.0, atol=1e-5)
    confident = torch.zeros(1, NUM_CLASSES, 3, 4)
    confident[:, 5] = 100.0
    ent = viz.entropy_map(confident)
    assert ent.shape == (3, 4) and ent.max() < 1e-4
    # Probabilities are recognised as such (softmax is not applied twice).
    prob = torch.softmax(torch.randn(2, NUM_CLASSES, 3, 4), dim=1)
    ent = viz.entropy_map(prob)
    assert ent.shape == (2, 3, 4)
    np.testing.assert_allclose(ent, viz.entropy_map(prob, kind="prob"), atol=1e-6)


def test_highlight_class_and_dim_outside():
    label = np.array([[1, 2], [2, 2]])
    mask = viz.highlight_class(label, 2)
    np.testing.assert_array_equal(mask, [[False, True], [True, True]])
    rgb = np.ones((2, 2, 3), dtype=np.float32)
    dimmed = viz.dim_outside(rgb, mask)
    assert dimmed[0, 0, 0] == pytest.approx(viz.DIM_FACTOR) and dimmed[1, 1, 0] == 1.0


def test_to_display_inverts_each_normalization():
    rgb = np.random.default_rng(1).random((H, W, 3)).astype(np.float32)
    chw = torch.from_numpy(rgb.transpose(2, 0, 1).copy())
    np.testing.assert_allclose(viz.denormalize_embedded(chw - 0.5), rgb, atol=1e-6)
    # The constants are written out here so that the test checks them too.
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    np.testing.assert_allclose(viz.to_display((chw - mean) / std, "imagenet"), rgb, atol=1e-5)
    caffe_mean_bgr = torch.tensor([104.00698793, 116.66876762, 122.67891434])[:, None, None]
    bgr255 = chw.flip(0) * 255.0 - caffe_mean_bgr
    np.testing.assert_allclose(viz.to_display(bgr255[None], "caffe"), rgb, atol=1e-5)
    with pytest.raises(ValueError):
        viz.to_display(chw, "nope")


def test_show_grid_has_one_axes_per_cell_and_a_colour_bar():
    img = np.zeros((H, W, 3))
    fig = viz.show_grid(
        [[img, np.zeros((H, W), dtype=np.int64), np.full((H, W), 0.5)], [img, None]],
        titles=["image", "label", "entropy"], row_labels=["a", "b"], value_label="entropy",
    )
    assert isinstance(fig, Figure) and len(fig.axes) == 6 + 1  # the cells and the colour bar
    assert fig.axes[0].get_title() == "image"
    assert fig.axes[-1].get_ylabel() == "entropy (0 to 1)"


def test_show_grid_legend_names_the_classes_of_its_label_maps():
    lab = np.zeros((H, W), dtype=np.int64)
    lab[:, : W // 2] = 2  # building
    lab[0, 0] = 255  # ignore
    fig = viz.show_grid([[lab, np.full((H, W), 13, dtype=np.int64)]])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["road", "building", "car", "ignore"]
    assert len(fig.axes) == 2  # no float map: no colour bar
    # label maps passed already colourised: the classes are given
    fig = viz.show_grid([[viz.colorize(lab)]], legend=[0, 2])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["road", "building"]
    assert not viz.show_grid([[lab]], legend=None).legends


def test_show_grid_value_range_from_the_maps():
    small = np.linspace(0.0, 0.02, H * W).reshape(H, W)
    fig = viz.show_grid([[small, small / 2]], value_range=None, value_label="I_x")
    image = fig.axes[0].images[0]
    assert image.get_clim() == (0.0, 0.02)  # the smallest and largest value of both maps
    assert fig.axes[-1].get_ylabel() == "I_x (0 to 0.02)"


def test_plot_loss_curves_one_panel_per_key():
    history = [{"iteration": i, "seg_main": 1.0 / (i + 1), "adv_main": 0.01 * i} for i in range(20)]
    assert len(viz.plot_loss_curves(history).axes) == 2
    df = pd.DataFrame(history)
    df["d_main"] = np.nan  # logged at some iterations only
    df.loc[::5, "d_main"] = 0.7
    fig = viz.plot_loss_curves(df, keys=["seg_main", "d_main"], smooth=5)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert len(fig.axes[0].lines) == 2  # raw + smoothed
    assert len(viz.plot_loss_curves(df, ncols=2).axes) == 3  # unused fourth cell removed


def test_bar_plots_have_one_bar_per_class_and_result():
    rng = np.random.default_rng(0)
    ious = {"source_only": rng.random(NUM_CLASSES), "advent": rng.random(NUM_CLASSES)}
    ious["advent"][3] = np.nan
    fig = viz.plot_per_class_bars(ious)
    assert len(fig.axes) == 1 and len(fig.axes[0].patches) == 2 * NUM_CLASSES
    freqs = {"source": rng.integers(0, 100, NUM_CLASSES), "target": rng.random(NUM_CLASSES)}
    fig = viz.plot_class_frequencies(freqs, log=True)
    assert len(fig.axes) == 1 and len(fig.axes[0].patches) == 2 * NUM_CLASSES
    heights = [p.get_height() for p in fig.axes[0].patches[:NUM_CLASSES]]
    assert sum(heights) == pytest.approx(100.0)


def test_bar_plots_leave_out_classes_absent_everywhere():
    iou = np.full(NUM_CLASSES, np.nan)
    iou[[0, 2, 13]] = [0.9, 0.5, 0.3]
    other = iou.copy()
    other[2] = np.nan  # absent in one result only: kept
    fig = viz.plot_per_class_bars({"a": iou, "b": other})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["road", "building", "car"]
    assert len(ax.patches) == 2 * 3
    freqs = np.zeros(NUM_CLASSES)
    freqs[[0, 8]] = [3, 1]
    fig = viz.plot_class_frequencies({"only": freqs})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["road", "vegetation"]
    assert [p.get_height() for p in ax.patches] == pytest.approx([75.0, 25.0])


def test_iou_heatmap_and_legend():
    df = iou_table({"a": np.linspace(0, 1, NUM_CLASSES), "b": np.full(NUM_CLASSES, np.nan)})
    fig = viz.plot_iou_heatmap(df)
    assert len(fig.axes) == 2  # heat map + colour bar
    assert len(fig.axes[0].texts) == NUM_CLASSES + 1  # NaN row left blank
    patches = viz.legend_patches([0, 13, IGNORE_INDEX])
    assert [p.get_label() for p in patches] == ["road", "car", "ignore"]


@pytest.mark.parametrize("layer", explorer.LAYERS)
def test_compute_layer_shapes_and_ranges(layer, models, discs, dataset):
    cache = explorer.PredictionCache()
    out = explorer.layers_for(models, dataset, 0, "output_adv", layer, discriminators=discs,
                              cache=cache)
    expected = (H, W) if layer in ("entropy", "discriminator") else (H, W, 3)
    assert out.shape == expected and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    highlighted = explorer.layers_for(models, dataset, 0, "output_adv", layer, highlight="car",
                                      discriminators=discs, cache=cache)
    assert highlighted.shape == (H, W, 3) and highlighted.max() <= 1.0
    # One forward serves both calls; image and ground truth need none.
    assert len(cache) == (0 if layer in ("image", "ground truth") else 1)


def test_compute_layer_pure_values(dataset):
    image01 = viz.denormalize_embedded(dataset[0]["image"])
    label = dataset[0]["label"]
    np.testing.assert_allclose(explorer.compute_layer("image", image01), image01)
    np.testing.assert_array_equal(
        explorer.compute_layer("ground truth", image01, label),
        viz.colorize(label).astype(np.float32) / 255.0,
    )
    logits = torch.zeros(NUM_CLASSES, H, W)
    logits[13] = 50.0  # confidently "car" everywhere
    pred = explorer.Prediction(logits)
    assert explorer.compute_layer("entropy", image01, label, pred).max() < 1e-4
    np.testing.assert_allclose(
        explorer.compute_layer("prediction", image01, label, pred)[0, 0],
        np.array(PALETTE[13]) / 255.0,
    )
    dimmed = explorer.compute_layer("image", image01, label, pred, highlight=label[10, 10].item())
    outside = label.numpy() != label[10, 10].item()
    np.testing.assert_allclose(dimmed[outside], viz.DIM_FACTOR * image01[outside], atol=1e-6)
    with pytest.raises(ValueError, match="discriminator"):
        explorer.compute_layer("discriminator", image01, label, pred)
    with pytest.raises(ValueError, match="labels"):
        explorer.compute_layer("ground truth", image01, None, pred)


def test_predict_uses_eval_mode_and_restores(models, discs, dataset):
    model, disc = models["output_adv"], discs["output_adv"]["main"]
    model.train()
    stats = model.bn1.running_mean.clone()
    fn = explorer.disc_input_for_method("advent")  # self-information input, same shape
    pred = explorer.predict(model, dataset[1]["image"], disc, fn)
    assert model.training and disc.training
    torch.testing.assert_close(model.bn1.running_mean, stats)  # no train-mode BN update
    assert pred.logits.shape == (NUM_CLASSES, H, W)
    assert pred.disc.shape == (H, W) and 0.0 <= pred.disc.min() <= pred.disc.max() <= 1.0


def test_prediction_cache_is_lru():
    cache = explorer.PredictionCache(maxsize=2)
    p = explorer.Prediction(torch.zeros(2, 1, 1))
    cache["a"], cache["b"] = p, p
    _ = cache["a"]
    cache["c"] = p
    assert cache.keys() == ["a", "c"]


def test_available_layers(discs):
    assert "discriminator" not in explorer.available_layers("source_only", discs)
    assert "discriminator" in explorer.available_layers("output_adv", discs)
    assert "ground truth" not in explorer.available_layers("output_adv", discs, has_labels=False)


def test_build_explorer_interactive(models, discs, dataset):
    import ipywidgets

    box = explorer.build_explorer(models, dataset, discs)
    assert isinstance(box, ipywidgets.VBox)
    assert box.index_slider.min == 0 and box.index_slider.max == len(dataset) - 1
    assert list(box.method_dropdown.options) == ["source_only", "output_adv"]
    assert list(box.layer_dropdown.options) == [
        "image", "ground truth", "prediction", "entropy",
    ]
    # Only the classes that occur in the dataset's labels are offered.
    present = sorted({int(c) for i in range(len(dataset)) for c in np.unique(dataset[i]["label"])}
                     - {IGNORE_INDEX})
    assert list(box.highlight_dropdown.options) == ["none", *(CLASS_NAMES[c] for c in present)]
    assert box.error is None and ("source_only", 0) in box.cache

    box.index_slider.value = 1
    assert box.error is None and ("source_only", 1) in box.cache
    box.method_dropdown.value = "output_adv"
    assert "discriminator" in box.layer_dropdown.options
    box.layer_dropdown.value = "discriminator"
    assert box.error is None and box.last.shape == (H, W)
    box.highlight_dropdown.value = "road"
    assert box.error is None and box.last.shape == (H, W, 3)
    box.method_dropdown.value = "source_only"  # no D: layer falls back to prediction
    assert box.layer_dropdown.value == "prediction" and box.error is None
    box.highlight_dropdown.value = "none"
    box.compare_dropdown.value = "output_adv"  # two models side by side
    assert box.error is None and box.last_beside is not None
    expected = explorer.layers_for(models, dataset, 1, "output_adv", "prediction")
    assert np.array_equal(box.last_beside, expected)
    box.compare_dropdown.value = "none"
    assert box.last_beside is None


def test_present_classes_lists_what_the_labels_hold():
    class Labels:
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {"label": np.array([[0, 13], [IGNORE_INDEX, 2 + 3 * i]])}

    assert explorer.present_classes(Labels()) == [0, 2, 5, 13]


def test_layer_figure_scales_a_discriminator_map_to_its_values():
    d_map = np.array([[0.4, 0.45], [0.5, 0.55]], dtype=np.float32)
    fig = explorer.layer_figure([d_map, d_map + 0.01], ["a", "b"], scale_to_data=True)
    image = fig.axes[0].images[0]
    assert image.get_clim() == pytest.approx((0.4, 0.56))
    assert [ax.get_title() for ax in fig.axes if ax.images] == ["a", "b"]


def test_build_explorer_static_figure(models, discs):
    fig = explorer.build_explorer(models, TinyDataset(), discs, interactive=False, num_models=2)
    assert isinstance(fig, Figure)
    # 2 images x (image, ground truth, 3 source_only layers... no D) + output_adv with D.
    # (+ 1: the colour bar of its float maps; the seven columns wrap into two bands of four,
    # whose last slot is blank)
    cells = [ax for ax in fig.axes if ax.get_label().startswith("cell ")]
    assert len(cells) == 2 * (2 + 2 + 3) and len(fig.axes) == 2 * 2 * 4 + 1
    fig = explorer.build_explorer(models, TinyDataset(with_labels=False), interactive=False)
    assert len([ax for ax in fig.axes if ax.get_label().startswith("cell ")]) == 2 * (1 + 2)


def test_beside_says_why_it_draws_no_second_panel(models, discs, dataset):
    choice = explorer.beside_choice
    assert choice("output_adv", "none", "prediction", discs) == (None, "")
    assert choice("output_adv", "source_only", "prediction", discs) == ("source_only", "")
    for other, layer, why in [("output_adv", "prediction", "first panel already"),
                              ("source_only", "discriminator", "no main-level discriminator"),
                              ("source_only", "image", "belongs to no model")]:
        shown, note = choice("output_adv", other, layer, discs)
        assert shown is None and why in note
    box = explorer.build_explorer(models, dataset, discs)
    box.method_dropdown.value = "output_adv"
    box.layer_dropdown.value = "discriminator"
    box.compare_dropdown.value = "source_only"
    assert box.error is None and box.last_beside is None
    assert "no main-level discriminator" in box.beside_note
    box.layer_dropdown.value = "entropy"
    assert box.last_beside is not None and box.beside_note == "" and len(box.titles) == 2


def test_a_highlighted_map_keeps_its_colour_bar_and_names_its_mask(models, discs, dataset):
    box = explorer.build_explorer(models, dataset, discs)
    box.layer_dropdown.value = "entropy"
    box.highlight_dropdown.value = box.highlight_dropdown.options[1]
    assert box.error is None and box.last.shape == (H, W, 3)
    assert "mask: prediction" in box.titles[0] and "values" in box.titles[0]
    box.layer_dropdown.value = "image"
    assert "mask: ground truth" in box.titles[0]
    assert explorer.highlight_mask("image", has_label=False) == "prediction"
    fig = explorer.layer_figure(box.last, "t", value_label=explorer.SCALAR_LAYERS["entropy"])
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and "(0 to 1)" in bars[0].get_ylabel()


def test_a_discriminator_map_keeps_the_scale_0_to_1_and_says_its_values():
    d_map = np.full((4, 8), 0.5, dtype=np.float32)
    d_map[0, 0], d_map[-1, -1] = 0.49, 0.51
    fig = explorer.layer_figure(d_map, "D", value_label=explorer.SCALAR_LAYERS["discriminator"])
    assert fig.axes[0].images[0].get_clim() == (0.0, 1.0)
    pred = explorer.Prediction(torch.zeros(NUM_CLASSES, 4, 8), torch.from_numpy(d_map))
    title = explorer.panel_title("m", "discriminator", 3, pred)
    assert title.startswith("m | discriminator | #3") and "values 0.490 to 0.510" in title


def test_the_static_explorer_shows_four_models(models, discs):
    four = {**models, "minent": models["source_only"], "advent": models["output_adv"]}
    fig = explorer.build_explorer(four, TinyDataset(), discs, interactive=False, num_images=1,
                                  num_models=4)
    cells = [ax for ax in fig.axes if ax.get_label().startswith("cell ")]
    titles = [ax.get_title() for ax in cells]
    assert len(cells) == 2 + 4 * 2 + 1  # image, ground truth; 2 layers each, output_adv's D
    assert {t.split(":")[0] for t in titles[2:]} == set(four)
    assert cells[titles.index("output_adv:\ndiscriminator")].get_xlabel().count(" to ") == 1
    assert fig.legends and fig.legends[0].get_texts()  # the class legend


def test_discriminator_scores_are_the_sigmoid_of_what_d_sees(models, discs, dataset):
    import torch.nn.functional as F

    from segda import evaluate, methods

    seg, disc = models["output_adv"], discs["output_adv"]["main"]
    scores = evaluate.discriminator_scores(seg, disc, "output_adv", dataset, device="cpu")
    seg.eval()
    with torch.no_grad():
        x = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
        prob = torch.softmax(F.interpolate(seg(x).main, size=x.shape[-2:], mode="bilinear",
                                           align_corners=True), dim=1)
        expected = torch.sigmoid(disc(prob)).flatten().numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    fig = viz.plot_discriminator_scores({"source val": np.array([0.1, 0.2, 0.7]),
                                         "target val": np.array([0.6, 0.9])})
    labels = [t.get_text() for t in fig.legends[0].get_texts()]  # above the axes, off the bars
    assert labels == ["source val (67% on its side)", "target val (100% on its side)"]
    assert methods.get("output_adv").disc_input.name == "softmax"


def test_plot_study_draws_each_run_against_its_control_and_marks_missing_runs():
    from types import SimpleNamespace as Run

    table = pd.DataFrame.from_dict({
        "source_only": {"control": "source_only", "gain": 0.0, "gains per seed": "+0.0 / +0.0",
                        "verdict": "the control"},
        "adapt@a": {"control": "source_only", "gain": 1.5, "gains per seed": "+1.0 / +2.0",
                    "verdict": "above the control on all 2 seeds"},
        "adapt@b": {"control": "source_only@b", "gain": -0.5, "gains per seed": "-1.5 / +0.5",
                    "verdict": "no consistent difference (1 of 2 seeds above)"},
    }, orient="index")
    fig = viz.plot_study(table, title="a study")
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == pytest.approx([1.5, -0.5])  # no control bar
    assert [t.get_text() for t in ax.get_xticklabels()] == ["adapt@a\nvs source_only",
                                                            "adapt@b\nvs source_only@b"]
    dots = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections])
    assert sorted(dots) == pytest.approx([-1.5, 0.5, 1.0, 2.0])
    assert ax.get_ylabel() == "gain over the control of the same setting (points)"
    assert ax.get_title() == "a study"
    assert any(line.get_ydata()[0] == 0.0 for line in ax.lines)  # the zero line
    # a study run the table lacks keeps its slot, marked; exact gains replace the printed ones
    study = [Run(name="source_only", control="source_only"), Run(name="adapt@a", control="source_only"),
             Run(name="adapt@c", control="source_only")]
    fig = viz.plot_study(table, study=study, gains={"adapt@a": [1.04, 1.96]})
    ax = fig.axes[0]
    assert len(ax.patches) == 1 and len(ax.get_xticklabels()) == 2
    assert "not in the\nreference" in [t.get_text() for t in ax.texts]
    assert sorted(ax.collections[0].get_offsets()[:, 1]) == pytest.approx([1.04, 1.96])
    with pytest.raises(ValueError, match="no run of this study"):
        viz.plot_study(table.loc[["source_only"]])


def _png_width(fig) -> int:
    """The width of the PNG a notebook's inline backend shows: saved at the figure's dpi with
    the tight bounding box (which grows past the figure when an artist sticks out of it)."""
    import io
    import struct

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, bbox_inches="tight")
    return struct.unpack(">I", buffer.getvalue()[16:20])[0]


def _every_figure(models, discs, dataset):
    """Each public figure function at its defaults, on small inputs and on the widest ones the
    notebooks give (every class, several results, many columns, four models)."""
    rng = np.random.default_rng(0)
    label = rng.integers(0, NUM_CLASSES, (H, W))
    image = rng.random((H, W, 3))
    history = pd.DataFrame({"iteration": range(20), "seg_main": rng.random(20),
                            "disc_main_src": rng.random(20), "disc_main_tgt": rng.random(20),
                            "adv_main": rng.random(20), "disc_aux_src": rng.random(20),
                            "disc_aux_tgt": rng.random(20), "adv_aux": rng.random(20),
                            "diag_dacc_main_src": rng.random(20), "diag_grad_source": rng.random(20),
                            "diag_grad_target": rng.random(20)})
    five = {f"result {k}": rng.random(NUM_CLASSES) for k in range(5)}
    reference = pd.DataFrame({
        "reference gain": rng.random(12), "reference gain std": rng.random(12),
        "reference gain min": rng.random(12), "reference gain max": rng.random(12),
        "gain (this run)": rng.random(12), "reference seeds": [3] * 12,
        "range checked low": rng.random(12), "range checked high": rng.random(12),
    }, index=[f"row {k}" for k in range(12)])
    sweep = pd.DataFrame({"lambda_adv_main": [0.001, 0.01, 0.1] * 2, "gain": rng.random(6)})
    study = pd.DataFrame({"control": ["c"] * 12, "gain": rng.random(12),
                          "gains per seed": ["+1.0 / -1.0"] * 12, "verdict": ["x"] * 12},
                         index=[f"run {k}" for k in range(12)])
    four = {**models, "minent": models["source_only"], "advent": models["output_adv"]}
    return {
        "show_grid": viz.show_grid([[image, label, label.astype(float) / NUM_CLASSES]]),
        "show_grid (13 columns)": viz.show_grid([[image] * 13] * 2),
        "plot_loss_curves": viz.plot_loss_curves(history),
        "plot_step_diagnostics": viz.plot_step_diagnostics(history),
        "plot_per_class_bars": viz.plot_per_class_bars({"a": rng.random(NUM_CLASSES)}),
        "plot_per_class_bars (5 results)": viz.plot_per_class_bars(five),
        "plot_iou_heatmap": viz.plot_iou_heatmap(iou_table(five)),
        "plot_class_frequencies (5 series)": viz.plot_class_frequencies(five),
        "plot_discriminator_scores": viz.plot_discriminator_scores(
            {"source val": rng.random(50), "target val": rng.random(50)}),
        "plot_against_reference (12 rows)": viz.plot_against_reference(reference),
        "plot_lambda_sweep": viz.plot_lambda_sweep(sweep),
        "plot_study (12 runs)": viz.plot_study(study),
        "layer_figure": explorer.layer_figure(image, "one panel", legend_ids=list(range(19))),
        "layer_figure (beside)": explorer.layer_figure(
            [label.astype(np.float32) / NUM_CLASSES] * 2, ["a", "b"], value_label="entropy"),
        "explorer grid (4 models)": explorer.build_explorer(
            four, dataset, discs, interactive=False, num_models=4),
    }


def test_every_figure_is_at_most_1400_pixels_wide(models, discs, dataset):
    import matplotlib.pyplot as plt

    assert viz.MAX_WIDTH_PX == 1400 and viz.DPI * viz.MAX_WIDTH_IN <= viz.MAX_WIDTH_PX
    for name, fig in _every_figure(models, discs, dataset).items():
        assert fig.dpi == viz.DPI, name  # what the inline backend saves at
        width = fig.get_size_inches()[0] * fig.dpi
        assert width <= viz.MAX_WIDTH_PX, (name, width)
        assert _png_width(fig) <= viz.MAX_WIDTH_PX, (name, _png_width(fig))
        assert not plt.get_fignums()  # closed: pyplot keeps none of them


def test_bars_too_many_for_one_row_are_split_and_the_legend_leaves_them_free():
    rng = np.random.default_rng(0)
    five = {f"result {k}": rng.random(NUM_CLASSES) for k in range(5)}
    fig = viz.plot_class_frequencies(five)
    panels = [ax for ax in fig.axes if ax.patches]
    assert len(panels) == 2
    shown = [t.get_text() for ax in panels for t in ax.get_xticklabels()]
    assert shown == list(CLASS_NAMES)  # every class once, in order
    assert fig.legends and all(ax.get_legend() is None for ax in panels)
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent()
    assert all(legend.y0 >= ax.get_window_extent().y1 for ax in panels)  # above every panel


def test_loss_panels_say_what_they_hold_and_where_chance_is():
    history = [{"iteration": i, "seg_main": 1.0, "disc_main_src": 0.3, "adv_main": 0.01}
               for i in range(5)]
    fig = viz.plot_loss_curves(history)
    by_title = {ax.get_title(): ax for ax in fig.axes}
    assert all(ax.get_ylabel() for ax in by_title.values())
    chance = [line for line in by_title["disc_main_src"].lines if line.get_linestyle() == ":"]
    # The step logs half of each domain's BCE: ln 2 / 2 when D outputs 0.5 everywhere.
    assert len(chance) == 1 and chance[0].get_ydata()[0] == pytest.approx(np.log(2) / 2)
    lsgan = viz.plot_loss_curves(history, gan_loss="lsgan")
    line = [x for x in lsgan.axes[1].lines if x.get_linestyle() == ":"][0]
    assert line.get_ydata()[0] == pytest.approx(0.125)
    assert not [x for x in by_title["seg_main"].lines if x.get_linestyle() == ":"]


def test_a_colourised_label_map_gets_its_class_legend():
    label = np.zeros((4, 6), dtype=np.int64)
    label[:2], label[0, 0] = 10, IGNORE_INDEX  # sky above road, one ignored pixel
    fig = viz.show_grid([[viz.colorize(label), np.random.default_rng(0).random((4, 6, 3))]])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["road", "sky", "ignore"]
    assert viz.palette_classes(np.full((2, 2, 3), 7, dtype=np.uint8)) is None  # not the palette


def test_colour_bar_labels_give_one_range():
    fig = explorer.layer_figure(np.zeros((4, 8), np.float32), "t",
                                value_label=explorer.SCALAR_LAYERS["entropy"])
    bar = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"][0]
    assert bar.get_ylabel() == "normalised entropy (0 to 1)"


def test_the_explorer_controls_wrap_and_a_number_box_picks_an_exact_image(models, discs, dataset):
    box = explorer.build_explorer(models, dataset, discs)
    controls = box.children[0]
    assert controls.layout.flex_flow == "row wrap"
    assert box.index_slider.layout.min_width  # the track keeps a usable length
    box.index_box.value = 1
    assert box.index_slider.value == 1 and box.error is None and ("source_only", 1) in box.cache
    box.index_slider.value = 0
    assert box.index_box.value == 0


def test_the_beside_message_offers_only_layers_both_models_have(discs):
    _, note = explorer.beside_choice("output_adv", "source_only", "image", discs)
    assert "prediction, entropy)" in note and "discriminator" not in note
    both = {"a": {"main": object()}, "b": {"main": object()}}
    _, note = explorer.beside_choice("a", "b", "ground truth", both)
    assert "prediction, entropy, discriminator)" in note
