"""Give freed heap memory back to the operating system after a weight swap.

A swap deserialises a whole state dict (hundreds of MB) next to the model and frees it a moment
later; glibc keeps such freed blocks in its arenas, so without a trim a replica's private memory
grows with every swap. Measured with smollm2-135m on CPU over 3 swaps with generation between
them: private memory 2.09 -> 2.25 GB without the trim, a flat 1.3 GB with it.
"""
import ctypes
import ctypes.util
import gc

_LIBC_NAME = ctypes.util.find_library("c")
_LIBC = ctypes.CDLL(_LIBC_NAME) if _LIBC_NAME else None


def release_freed_memory() -> bool:
    """Collect garbage, then return free heap pages to the OS; False where libc has no malloc_trim."""
    gc.collect()
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is None:  # not glibc (musl, macOS): nothing to trim
        return False
    trim(0)
    return True
