import platform
import subprocess
import sys

import pytest

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="the setting is glibc's (mallopt)")
def test_cpu_setup_keeps_freed_memory():
    """Training on a CPU sets up the device with glibc told to keep freed memory; mallopt accepts the
    values (it refuses an mmap threshold over 32 MB, for one). In a fresh process: the setting stays."""
    code = ("import torch; from hellogpt.device import keep_freed_memory, setup_device; "
            "setup_device(torch.device('cpu')); print(keep_freed_memory.cache_info().misses, keep_freed_memory())")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["1", "True"]  # setup_device made the call, and mallopt took both values


def test_keep_freed_memory_elsewhere_is_a_no_op(monkeypatch):
    from hellogpt import device

    device.keep_freed_memory.cache_clear()
    monkeypatch.setattr(device.platform, "system", lambda: "Darwin")
    try:
        assert device.keep_freed_memory() is False
    finally:
        device.keep_freed_memory.cache_clear()
