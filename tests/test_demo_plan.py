"""make demo's plan: two groups of consecutive notebooks side by side, one core each, every
notebook once and each group in order; a kernel that dies at start is started again."""

import os
import threading
import time

import pytest

from segda import notebooks_runner as nr


def test_the_two_groups_are_the_sequence_split_in_two():
    groups, threads = nr.demo_plan(2)
    assert threads == 1 and len(groups) == 2
    assert groups[0] + groups[1] == nr.NOTEBOOKS  # consecutive, in order, each once
    assert all(groups)
    assert nr.demo_plan(16)[1] == 8
    assert nr.demo_plan(1) == ((nr.NOTEBOOKS,), 1)


def test_demo_runs_the_groups_side_by_side_each_in_order(tmp_path, monkeypatch):
    spans, kernels_env = {}, set()

    def fake_execute(path, output, params, cwd=None):
        start = time.perf_counter()
        time.sleep(0.2)
        kernels_env.add(os.environ.get("OMP_NUM_THREADS"))
        spans[path.stem] = (start, time.perf_counter(), threading.get_ident())

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(nr, "execute", fake_execute)
    monkeypatch.setattr(nr, "export_figures", lambda *a, **k: [])
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    from segda import runs

    monkeypatch.setattr(runs, "collect", stop)  # the groups are what this test looks at
    with pytest.raises(Stop):
        nr.demo(tmp_path / "demo")
    groups, _ = nr.demo_plan(2)
    assert set(spans) == set(nr.NOTEBOOKS)
    for group in groups:  # in order within a group, one thread per group
        starts = [spans[n][0] for n in group]
        assert starts == sorted(starts)
        assert len({spans[n][2] for n in group}) == 1
    # the first notebooks of the two groups ran at the same time
    a, b = spans[groups[0][0]], spans[groups[1][0]]
    assert a[0] < b[1] and b[0] < a[1]
    assert kernels_env == {"1"}  # one thread per kernel on two cores


def test_a_kernel_that_dies_at_start_is_started_again(tmp_path, monkeypatch):
    import papermill

    tries = []

    def flaky(*args, **kwargs):
        tries.append(1)
        if len(tries) == 1:
            raise RuntimeError(nr.KERNEL_DIED_AT_START)
        return "executed"

    monkeypatch.setattr(papermill, "execute_notebook", flaky)
    assert nr.execute(tmp_path / "a.ipynb", tmp_path / "out.ipynb", {}) == "executed"
    assert len(tries) == 2

    def other_error(*args, **kwargs):
        raise RuntimeError("something else")

    monkeypatch.setattr(papermill, "execute_notebook", other_error)
    with pytest.raises(RuntimeError, match="something else"):
        nr.execute(tmp_path / "a.ipynb", tmp_path / "out.ipynb", {})
