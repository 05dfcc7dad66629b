"""The notebook tests' kernel start (tests/conftest.py) tries again when a kernel dies at start."""
import pytest

from conftest import _start_kernel_with_retries


def test_a_kernel_that_dies_once_is_started_again():
    calls = []

    def dies_first(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise RuntimeError("Kernel died before replying to kernel_info")
        return "manager", "client"

    assert _start_kernel_with_retries(dies_first)(kernel_name="python3") == ("manager", "client")
    assert calls == [{"kernel_name": "python3"}] * 2


def test_a_kernel_that_never_starts_fails_naming_the_tries():
    calls = []

    def always_dies(**kwargs):
        calls.append(kwargs)
        raise RuntimeError("Kernel died before replying to kernel_info")

    with pytest.raises(RuntimeError, match="did not start in 3 tries: Kernel died"):
        _start_kernel_with_retries(always_dies)()
    assert len(calls) == 3


def test_nbval_starts_kernels_through_the_retrying_start():
    import nbval.kernel

    assert getattr(nbval.kernel.start_new_kernel, "retries", False)
