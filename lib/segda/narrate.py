"""Sentences that read numbers: one rule for "above", "below" and "no consistent difference".

A notebook states what its run measured with these functions instead of prose written to fit
any run, so the sentence changes with the numbers and every notebook judges a difference the
same way. The rule (:func:`direction`): a row is above (below) a reference when it is above
(below) it by more than ``tolerance`` on every seed, each seed paired with the reference's
run of the same seed; anything else is no consistent difference. One seed is reported, not
judged, when the differences are over seeds (:func:`verdict`): a single pair cannot tell a gain
from seed noise. :func:`segda.results.verdict`, the reference tables' verdict, is this rule.

>>> seeds("AdvEnt", {0: 48.2, 1: 47.9, 2: 49.0}, "the control", {0: 45.0, 1: 44.8, 2: 45.7})
'AdvEnt is 3.2 mIoU above the control on all 3 seeds (+3.2, +3.1, +3.3)'
>>> ordering(["MinEnt", "AdvEnt"], {"MinEnt": 45.0, "AdvEnt": 48.4})
'the papers order MinEnt < AdvEnt; here MinEnt 45.0 < AdvEnt 48.4: holds'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

ABOVE, BELOW, NEITHER = "above", "below", "no consistent difference"

Values = Mapping[int, float] | Sequence[float]


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def signed(value: float, digits: int = 1) -> str:
    """A difference with its sign: ``+3.2``, ``-0.6``.

    >>> signed(3.21), signed(-0.6), signed(0.0)
    ('+3.2', '-0.6', '+0.0')
    """
    return f"{value:+.{digits}f}"


def direction(differences, tolerance: float = 0.0) -> str:
    """The one rule: :data:`ABOVE` when every difference is above ``tolerance``, :data:`BELOW`
    when every one is below ``-tolerance``, else :data:`NEITHER` (also for no difference at
    all). Non-finite differences (a seed without its pair) are left out.

    >>> direction([3.0, 3.5, 3.1])
    'above'
    >>> direction([-1.0, -0.2])
    'below'
    >>> direction([0.4, -0.6, 0.1])
    'no consistent difference'
    >>> direction([0.05], tolerance=0.1)
    'no consistent difference'
    """
    values = _finite(differences)
    if values and all(v > tolerance for v in values):
        return ABOVE
    if values and all(v < -tolerance for v in values):
        return BELOW
    return NEITHER


def paired(values: Values, reference: Values) -> list[float]:
    """``values`` minus ``reference``, seed by seed: two mappings (seed -> value) are paired on
    the seeds they share, in the order of the seeds; two sequences element by element.

    >>> paired({0: 48.0, 1: 47.0, 2: 50.0}, {2: 45.0, 0: 45.5})
    [2.5, 5.0]
    >>> paired([1.0, 2.0], [0.5, 2.5])
    [0.5, -0.5]
    """
    if isinstance(values, Mapping) and isinstance(reference, Mapping):
        common = sorted(set(values) & set(reference))
        if not common:
            raise ValueError(f"no seed in common: {sorted(values)} and {sorted(reference)}")
        return [float(values[s]) - float(reference[s]) for s in common]
    if isinstance(values, Mapping) or isinstance(reference, Mapping):
        raise TypeError("pair two mappings (seed -> value) or two sequences, not one of each")
    if len(values) != len(reference):
        raise ValueError(f"{len(values)} values against {len(reference)}: pair them by seed")
    return [float(v) - float(r) for v, r in zip(values, reference, strict=True)]


def verdict(gains, reference: str = "the control", tolerance: float = 0.0) -> str:
    """The judgement of a row's gains over ``reference``, one per seed (each paired with the
    reference's run of its own seed), by :func:`direction`; one seed is not judged.

    >>> verdict([3.0, 3.5, 3.1])
    'above the control on all 3 seeds'
    >>> verdict([0.4, -0.6, 0.1])
    'no consistent difference (2 of 3 seeds above)'
    >>> verdict([2.0])
    'one seed: not judged'
    """
    gains = _finite(gains)
    if len(gains) < 2:
        return "one seed: not judged"
    side = direction(gains, tolerance)
    if side == NEITHER:
        above = sum(g > tolerance for g in gains)
        return f"{NEITHER} ({above} of {len(gains)} seeds above)"
    return f"{side} {reference} on all {len(gains)} seeds"


def seeds(name: str, values: Values, reference: str, reference_values: Values,
          unit: str = "mIoU", tolerance: float = 0.0, digits: int = 1) -> str:
    """One sentence on a row against a reference row over seeds (paired by :func:`paired`):
    the mean difference and its direction by :func:`direction`, with each seed's difference.

    >>> seeds("MinEnt", [44.0, 45.1, 43.9], "the control", [45.0, 44.5, 43.8])
    'MinEnt: no consistent difference from the control (-1.0, +0.6, +0.1: 2 of 3 seeds above)'
    >>> seeds("AdvEnt", [40.0, 41.0], "AdaBN", [42.5, 43.0])
    'AdvEnt is 2.2 mIoU below AdaBN on all 2 seeds (-2.5, -2.0)'
    >>> seeds("AdvEnt", [48.0], "the control", [45.0])
    'AdvEnt is 3.0 mIoU above the control on its one seed (+3.0; one seed cannot tell a gain from seed noise)'
    """
    gains = _finite(paired(values, reference_values))
    if not gains:
        return f"{name}: no seed paired with {reference}"
    each = ", ".join(signed(g, digits) for g in gains)
    mean = sum(gains) / len(gains)
    side = direction(gains, tolerance)
    size = f"{abs(mean):.{digits}f}{_unit(unit)}"
    if len(gains) == 1:
        if side == NEITHER:
            return (f"{name} is within {tolerance:g}{_unit(unit)} of {reference} on its one seed "
                    f"({each})")
        return (f"{name} is {size} {side} {reference} on its one seed ({each}; one seed cannot "
                "tell a gain from seed noise)")
    if side == NEITHER:
        above = sum(g > tolerance for g in gains)
        return f"{name}: {NEITHER} from {reference} ({each}: {above} of {len(gains)} seeds above)"
    return f"{name} is {size} {side} {reference} on all {len(gains)} seeds ({each})"


def _unit(unit: str) -> str:
    """A unit after a number: ``%`` sticks to it, a word gets a space."""
    return unit if not unit or unit.startswith("%") else f" {unit}"


def compare(name: str, value: float, other: str, other_value: float, unit: str = "",
            tolerance: float = 0.0, digits: int = 1) -> str:
    """One number against another, with the difference in ``unit`` and its direction; within
    ``tolerance`` the two are called level.

    >>> compare("AdvEnt's target entropy", 0.053, "MinEnt's", 0.078, digits=3)
    "AdvEnt's target entropy 0.053 is 0.025 below MinEnt's 0.078"
    >>> compare("building", 33.9, "the true share", 30.0, unit="%")
    'building 33.9% is 3.9% above the true share 30.0%'
    >>> compare("seed 0", 45.02, "seed 1", 45.0, unit="mIoU", tolerance=0.1)
    'seed 0 45.0 mIoU and seed 1 45.0 mIoU are level (within 0.1 mIoU)'
    """
    u = _unit(unit)
    diff = float(value) - float(other_value)
    a, b = f"{value:.{digits}f}{u}", f"{other_value:.{digits}f}{u}"
    side = direction([diff], tolerance)
    if side == NEITHER:
        return f"{name} {a} and {other} {b} are level (within {tolerance:g}{u})"
    return f"{name} {a} is {abs(diff):.{digits}f}{u} {side} {other} {b}"


def order_holds(lower: str, higher: str, values: Mapping[str, float]) -> bool | None:
    """Whether ``values[lower] < values[higher]``; ``None`` when either is missing or NaN."""
    a, b = values.get(lower), values.get(higher)
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return None
    return float(a) < float(b)


def ordering(claim: Sequence[str], values: Mapping[str, float], source: str = "the papers",
             digits: int = 1) -> str:
    """``source``'s ordering of ``claim`` (lowest first) checked pair by pair against
    ``values``: each neighbouring pair holds or does not.

    >>> text = ordering(["MinEnt", "AdaptSegNet", "AdvEnt"],
    ...                 {"MinEnt": 46.0, "AdaptSegNet": 45.2, "AdvEnt": 48.4})
    >>> print(text.replace("; ", ";\\n"))
    the papers order MinEnt < AdaptSegNet < AdvEnt;
    here MinEnt 46.0 > AdaptSegNet 45.2: does not hold;
    AdaptSegNet 45.2 < AdvEnt 48.4: holds
    """
    if len(claim) < 2:
        raise ValueError("an ordering needs at least two names")
    checks = []
    for lower, higher in zip(claim, claim[1:]):
        holds = order_holds(lower, higher, values)
        if holds is None:
            checks.append(f"{lower} or {higher} not measured: not checked")
            continue
        a, b = float(values[lower]), float(values[higher])
        sign = "<" if a < b else ">" if a > b else "="
        checks.append(f"{lower} {a:.{digits}f} {sign} {higher} {b:.{digits}f}: "
                      f"{'holds' if holds else 'does not hold'}")
    return f"{source} order {' < '.join(claim)}; here " + "; ".join(checks)


def ordering_table(pairs: Sequence[tuple[str, str]], values: Mapping[str, float],
                   source: str = "the papers", digits: int = 1):
    """Orderings side by side, one row per pair ``(lower, higher)`` that ``source`` reports:
    ``source``'s order, the measured values and the verdict (a pandas DataFrame).

    >>> ordering_table([("MinEnt", "AdvEnt")], {"MinEnt": 45.0, "AdvEnt": 48.4}).iloc[0].tolist()
    ['MinEnt < AdvEnt', 'MinEnt 45.0 < AdvEnt 48.4', 'holds']
    """
    import pandas as pd

    table = []
    for lower, higher in pairs:
        holds = order_holds(lower, higher, values)
        if holds is None:
            here, judged = "not measured", "not checked"
        else:
            a, b = float(values[lower]), float(values[higher])
            sign = "<" if a < b else ">" if a > b else "="
            here = f"{lower} {a:.{digits}f} {sign} {higher} {b:.{digits}f}"
            judged = "holds" if holds else "does not hold"
        table.append({source: f"{lower} < {higher}", "here": here, "verdict": judged})
    return pd.DataFrame(table, columns=[source, "here", "verdict"])


__all__ = [
    "ABOVE", "BELOW", "NEITHER", "compare", "direction", "order_holds", "ordering",
    "ordering_table", "paired", "seeds", "signed", "verdict",
]
