import os
from pathlib import Path

import pytest
import torch

# Tests measure behaviour, not speed; keep them single-threaded for reproducible results
# across machines, and leave the second core to the notebook tests running beside them.
torch.set_num_threads(int(os.environ.get("SEGDA_TEST_THREADS", "1")))

# make test runs two pytest-xdist workers (--dist loadgroup --no-loadscope-reorder), which take
# whole groups in the order of the items. What must stay in one process is one group: the
# committed notebooks under nbval, in two groups of consecutive notebooks (each group's
# notebooks run in order; the two groups share runs/notebooks: a notebook that finds a row
# being trained by the other group waits for it and reuses it, segda.notebook.when_free), and
# the modules that share the session fixtures below. Every other module is a group of its own,
# so that its module fixtures are built once. The long groups go first, in LONG_GROUPS order,
# and the short ones fill in behind them.
def _second_group_from() -> str:
    from segda.notebooks_runner import NOTEBOOK_GROUPS

    return NOTEBOOK_GROUPS[1][0][:2]


SHARED_FIXTURE_MODULES = {"test_reproduce.py", "test_cluster.py", "test_sweep.py"}
# Notebooks from this one on form the second notebook group (the split make demo uses too).
SECOND_NOTEBOOK_GROUP_FROM = _second_group_from()
LONG_GROUPS = ("notebooks", "end_to_end", "notebooks_late")


def _group(item) -> str:
    path = Path(str(item.path))
    if path.suffix == ".ipynb":
        return "notebooks_late" if path.name[:2] >= SECOND_NOTEBOOK_GROUP_FROM else "notebooks"
    return "end_to_end" if path.name in SHARED_FIXTURE_MODULES else path.stem


def _start_kernel_with_retries(start_kernel, attempts: int = 3):
    """nbval's kernel start, tried again when the kernel dies before it answers: kernels started
    at the same moment by two workers can be handed the same free TCP port (jupyter_client
    picks ports before the kernel binds them), and the loser exits at once."""

    def start(*args, **kwargs):
        for attempt in range(1, attempts + 1):
            try:
                return start_kernel(*args, **kwargs)
            except RuntimeError as error:
                if attempt == attempts:
                    raise RuntimeError(f"the notebook kernel did not start in {attempts} "
                                       f"tries: {error}") from error

    return start


def pytest_configure(config):
    try:
        import nbval.kernel
    except ImportError:  # nbval is a dev extra; the unit tests run without it
        return
    if not getattr(nbval.kernel.start_new_kernel, "retries", False):
        nbval.kernel.start_new_kernel = _start_kernel_with_retries(nbval.kernel.start_new_kernel)
        nbval.kernel.start_new_kernel.retries = True


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    rank = {}
    for item in items:
        group = _group(item)
        item.add_marker(pytest.mark.xdist_group(group))
        rank[id(item)] = LONG_GROUPS.index(group) if group in LONG_GROUPS else len(LONG_GROUPS)
    # A stable sort: the notebooks' cells and every module's tests keep their order.
    items.sort(key=lambda item: rank[id(item)])


@pytest.fixture(scope="session")
def tiny_embedded():
    """A small embedded-benchmark config (32x64) shared by training tests."""
    from segda.data import synthetic

    return synthetic.SyntheticConfig(height=32, width=64)


@pytest.fixture(scope="session")
def readme_sweep(tmp_path_factory):
    """The documented sweep, run serially at tiny length (tests/test_sweep.py); the cluster tests
    compare their runs against its runs."""
    from test_sweep import run_readme_sweep

    return run_readme_sweep(tmp_path_factory.mktemp("readme_sweep"))


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    """The README's miniature block run as written, and the files the paper presets read
    (tests/test_reproduce.py); the README's cluster block runs on it too."""
    from test_reproduce import make_workspace

    return make_workspace(tmp_path_factory.mktemp("reproduce"))
