"""release_freed_memory trims the heap on glibc (the swap path calls it; the bench shows its effect)."""

import platform

from serving.memory import release_freed_memory


def test_release_freed_memory_trims_on_glibc_only():
    assert release_freed_memory() == (platform.libc_ver()[0] == "glibc")
