import os
import platform
import subprocess
import sys

import pytest

from hellogpt.core.device import malloc_variable

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.integration
@pytest.mark.skipif(not GLIBC, reason="the setting is glibc's (mallopt)")
def test_cpu_setup_keeps_freed_memory():
    """Training on a CPU sets up the device with glibc told to keep freed memory, and mallopt takes both
    values; unless the environment tunes glibc's malloc itself. In fresh processes: the setting stays."""
    code = ("import torch; from hellogpt.core.device import keep_freed_memory, setup_device; "
            "setup_device(torch.device('cpu')); print(keep_freed_memory.cache_info().misses, keep_freed_memory())")
    env = {k: v for k, v in os.environ.items() if not malloc_variable(k)}
    for extra, expected in (({}, "True"), ({"MALLOC_MMAP_THRESHOLD_": "262144"}, "False")):
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             env={**env, **extra})
        assert run.returncode == 0, run.stderr
        assert run.stdout.split() == ["1", expected]  # setup_device made the call; mallopt took both values


def test_keep_freed_memory_elsewhere_is_a_no_op(monkeypatch):
    from hellogpt.core import device

    device.keep_freed_memory.cache_clear()
    monkeypatch.setattr(device.platform, "system", lambda: "Darwin")
    try:
        assert device.keep_freed_memory() is False
    finally:
        device.keep_freed_memory.cache_clear()
