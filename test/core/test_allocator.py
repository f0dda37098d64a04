import platform
import sys

import pytest

from dexwm_ros.core.allocator import retain_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc only")
def test_retain_freed_memory_takes_effect_and_can_repeat():
    assert retain_freed_memory()
    assert retain_freed_memory()
