"""segda.narrate: the sentences that read a run's numbers, against hand-computed expectations."""

import doctest
import math

import pytest

from segda import narrate, results


def test_the_docstring_examples_hold():
    assert doctest.testmod(narrate).failed == 0


def test_one_rule_decides_above_below_and_neither():
    assert narrate.direction([0.1, 2.0, 5.0]) == "above"
    assert narrate.direction([-0.1, -3.0]) == "below"
    assert narrate.direction([1.0, 0.0]) == "no consistent difference"  # a tie is not a gain
    assert narrate.direction([]) == "no consistent difference"
    assert narrate.direction([1.0, math.nan, 2.0]) == "above"  # an unpaired seed is left out
    assert narrate.direction([0.3, 0.5], tolerance=0.4) == "no consistent difference"
    assert narrate.direction([0.5, 0.6], tolerance=0.4) == "above"


def test_the_reference_tables_use_the_same_rule():
    for gains in ([3.0, 3.5, 3.1], [-1.0, -2.0], [0.4, -0.6, 0.1], [2.0], []):
        assert results.verdict(gains) == narrate.verdict(gains)
    assert results.verdict([0.4, -0.6, 0.1]) == "no consistent difference (2 of 3 seeds above)"


def test_seeds_pairs_by_seed_and_reads_the_numbers():
    # seed 1: 47.0 - 44.0 = +3.0; seed 2: 49.5 - 45.0 = +4.5 (seed 0 has no control): mean 3.75
    text = narrate.seeds("AdvEnt", {2: 49.5, 1: 47.0, 0: 50.0}, "the control", {1: 44.0, 2: 45.0})
    assert text == "AdvEnt is 3.8 mIoU above the control on all 2 seeds (+3.0, +4.5)"
    # 03's failure study at the full shift: -3.5 mean, below on two seeds of three
    text = narrate.seeds("AdaptSegNet", [40.0, 41.0, 44.5], "the control", [45.0, 45.5, 44.0])
    assert text == ("AdaptSegNet: no consistent difference from the control "
                    "(-5.0, -4.5, +0.5: 1 of 3 seeds above)")
    assert narrate.seeds("x", [1.05], "y", [1.0], tolerance=0.1) == \
        "x is within 0.1 mIoU of y on its one seed (+0.1)"
    with pytest.raises(ValueError, match="no seed in common"):
        narrate.paired({0: 1.0}, {1: 1.0})
    with pytest.raises(ValueError, match="pair them by seed"):
        narrate.paired([1.0, 2.0], [1.0])


def test_compare_states_both_numbers_the_difference_and_its_unit():
    assert narrate.compare("drift", 0.091, "at the start", 0.140, digits=3) == \
        "drift 0.091 is 0.049 below at the start 0.140"
    assert narrate.compare("accuracy on target", 62, "on source", 76, unit="%", digits=0) == \
        "accuracy on target 62% is 14% below on source 76%"
    assert narrate.compare("a", 1.0, "b", 1.0) == "a 1.0 and b 1.0 are level (within 0)"


def test_orderings_are_checked_pair_by_pair():
    values = {"MinEnt": 44.8, "feature-level": 47.2, "single-level": 52.3, "AdvEnt": 53.8,
              "multi-level": 51.8}
    assert narrate.ordering(["single-level", "multi-level"], values) == (
        "the papers order single-level < multi-level; here single-level 52.3 > multi-level "
        "51.8: does not hold")
    table = narrate.ordering_table([("feature-level", "MinEnt"), ("MinEnt", "AdvEnt"),
                                    ("AdvEnt", "oracle")], values)
    assert table["verdict"].tolist() == ["does not hold", "holds", "not checked"]
    assert table["here"].tolist()[:2] == ["feature-level 47.2 > MinEnt 44.8",
                                         "MinEnt 44.8 < AdvEnt 53.8"]
    assert narrate.order_holds("AdvEnt", "oracle", values) is None
    with pytest.raises(ValueError):
        narrate.ordering(["one"], values)
