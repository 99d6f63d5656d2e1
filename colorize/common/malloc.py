"""Give freed memory back to the OS during long batched array work (glibc's malloc only).

glibc raises its mmap threshold after each large block is freed (up to 32 MB), so later
large temporaries of the same size come from the heap and stay there after they are
freed. A stage that runs many batches through torch then ratchets its RSS up with the
number of batches, i.e. with the dataset: curate's peak went from 793 MB to 1,024 MB
between 1,000 and 8,000 images (`python -m bench.suite --only memory`). A fixed
threshold makes every large block its own mapping, returned on free.

The cost is a page fault per page of every new large block, so training loops (which
reuse their activation buffers every step) do not call this.
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # mallopt parameter, from glibc's malloc.h
FIXED_THRESHOLD = 128 * 1024  # glibc's default start value; fixed, it no longer moves
# For a stage that trains as well: a training step's blocks (activations of a small batch)
# stay under it, so they are reused from the heap without page faults; scoring's larger
# batches are mapped and returned. Relevance at 2,000 -> 6,000 images: peak 436 -> 535 MB
# with the moving threshold, 400 -> 415 MB with this one, in the same time (at 128 kB: 9%
# slower).
BATCHED_THRESHOLD = 4 * 1024 * 1024


def arrow_on_system_malloc() -> None:
    """Let pyarrow (parquet, and pandas' arrow-backed strings) allocate with malloc, not
    its default mimalloc pool, which keeps the pages it frees: ingest's peak at 2,000 ->
    8,000 -> 16,000 images was 100 -> 115 -> 118 MB with mimalloc, 90 -> 99 -> 101 MB with
    malloc, in the same seconds; split's at 4,000 -> 64,000 rows 113 -> 140 MB, 86 -> 119
    (docs/scale.md). Call it before the stage reads a table."""
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())


def return_freed_memory(threshold: int = FIXED_THRESHOLD) -> bool:
    """Fix the mmap threshold; True if this libc took it (False off glibc: nothing changes)."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        return bool(ctypes.CDLL(name).mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False
