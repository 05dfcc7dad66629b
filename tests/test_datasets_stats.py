"""segda.data.stats.class_frequencies, the one place a class frequency is computed, on
hand-counted labels."""

from __future__ import annotations

import numpy as np
import torch

from segda.data import stats, synthetic

# 2x4 labels: class 0 three times, class 2 twice, class 18 once, two ignore pixels.
LABEL = np.array([[0, 0, 2, 255], [18, 0, 2, 255]], dtype=np.uint8)


def test_label_class_counts_by_hand():
    counts = stats.label_class_counts(LABEL)
    assert counts.dtype == np.int64 and counts.shape == (19,)
    expected = np.zeros(19, dtype=np.int64)
    expected[[0, 2, 18]] = [3, 2, 1]
    np.testing.assert_array_equal(counts, expected)
    # an int64 tensor (a dataset item's label) counts the same
    np.testing.assert_array_equal(stats.label_class_counts(torch.from_numpy(LABEL).long()),
                                  expected)


class _Items:
    """A dataset of dict items only (no class_counts): frequencies come from the labels."""

    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"label": torch.from_numpy(self.labels[i]).long()}


class _Counted(_Items):
    """A dataset that also offers per-item counts: those are used, the items are not read."""

    def __getitem__(self, i):
        raise AssertionError("class_frequencies must use class_counts")

    def class_counts(self, i):
        return stats.label_class_counts(self.labels[i])


def test_class_frequencies_by_hand():
    second = np.full((2, 4), 2, dtype=np.uint8)  # eight pixels of class 2
    for cls in (_Items, _Counted):
        freq = stats.class_frequencies(cls([LABEL, second]))
        expected = np.zeros(19)
        expected[[0, 2, 18]] = np.array([3, 10, 1]) / 14
        np.testing.assert_allclose(freq, expected, rtol=0, atol=1e-15)
        only_first = stats.class_frequencies(cls([LABEL, second]), max_items=1)
        np.testing.assert_allclose(only_first[[0, 2, 18]], np.array([3, 2, 1]) / 6, atol=1e-15)
    assert stats.class_frequencies(_Items([np.full((2, 2), 255, np.uint8)])).sum() == 0


def test_embedded_counts_equal_its_labels():
    cfg = synthetic.SyntheticConfig(height=16, width=32, n_source_val=5)
    ds = synthetic.SyntheticStreetScenes("source", "val", cfg, flip=True)
    by_items = stats.class_frequencies(_Items([ds.label_array(i) for i in range(len(ds))]))
    assert np.array_equal(stats.class_frequencies(ds), by_items)
    fresh = synthetic.SyntheticStreetScenes("source", "val", cfg, cache=False)
    assert np.array_equal(stats.class_frequencies(fresh), by_items)
