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
