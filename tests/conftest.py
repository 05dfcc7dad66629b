import os

import pytest
import torch

# Tests measure behaviour, not speed; keep them single-threaded for reproducible results
# across machines, and leave the second core to the notebook tests running beside them.
torch.set_num_threads(int(os.environ.get("SEGDA_TEST_THREADS", "1")))


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
