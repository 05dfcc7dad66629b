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
    # (+ 1: the colour bar of its float maps; cells only: axes that are not a colour bar)
    cells = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(cells) == 2 * (2 + 2 + 3) and len(fig.axes) == len(cells) + 1
    fig = explorer.build_explorer(models, TinyDataset(with_labels=False), interactive=False)
    assert len([ax for ax in fig.axes if ax.get_label() != "<colorbar>"]) == 2 * (1 + 2)


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
    cells = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
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
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
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
