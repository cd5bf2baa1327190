"""release_freed_memory collects reference cycles, then gives their freed heap pages back to the OS (glibc).

The swap path relies on both halves: a deserialised state dict can sit in reference cycles (only the
collector frees it), and glibc keeps freed blocks below the top of the heap resident until malloc_trim.
"""

import gc
import platform
import weakref
from types import SimpleNamespace

import psutil
import pytest

from serving import memory
from serving.memory import release_freed_memory

ON_GLIBC = platform.libc_ver()[0] == "glibc"

N_BUFFERS, BUFFER_BYTES = 20_000, 4096  # 78 MiB in blocks above pymalloc's 512 B limit: glibc's heap holds them


class _Node:
    """An object that can be weakly referenced and can point at itself."""


@pytest.fixture
def collector_off():
    """Automatic collection off, so the cycles below stay until release_freed_memory collects them."""
    gc.disable()
    yield
    gc.enable()


@pytest.mark.skipif(not ON_GLIBC, reason="malloc_trim is glibc's")
def test_memory_held_by_garbage_cycles_goes_back_to_the_os(collector_off):
    cycles = []
    for _ in range(N_BUFFERS):
        cycle = [b"x" * BUFFER_BYTES]  # a written buffer: its pages are resident
        cycle.append(cycle)
        cycles.append(cycle)
    top_of_heap = b"y" * BUFFER_BYTES  # allocated last: free() alone cannot shrink the heap below it
    del cycles, cycle  # unreachable now, but freed only by the collector
    rss_before = psutil.Process().memory_info().rss

    assert release_freed_memory() is True

    released = rss_before - psutil.Process().memory_info().rss
    assert released > N_BUFFERS * BUFFER_BYTES / 2, f"released {released / 2**20:.1f} MiB of 78 MiB"
    assert top_of_heap  # still alive: what was released sat below it


def test_without_malloc_trim_it_still_collects_and_says_false(monkeypatch, collector_off):
    monkeypatch.setattr(memory, "_PROCESS", SimpleNamespace())  # a libc without malloc_trim (musl, macOS)
    cycle = _Node()
    cycle.itself = cycle
    watch = weakref.ref(cycle)
    del cycle

    assert release_freed_memory() is False
    assert watch() is None, "the cycle was not collected"
