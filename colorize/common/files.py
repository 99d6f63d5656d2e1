"""Writing files whole or not at all: the one way every stage and command writes a file
that someone (a later stage, a resumed run, a person) will read.

`atomic_write(path, write)` lets `write` fill a hidden temporary file beside `path` (same
folder, so the rename is atomic), then renames it into place. A crash, a kill or a full
disk leaves either the old file or the new one, never a truncated one; the temporary is
removed on failure (a full disk's partial file would hold on to the space). An OSError
becomes one line naming the file: `disk full writing data/ingest/shards/... (3.1 MB free):
free some space and rerun (completed work is kept)`, or `cannot write ...: <why>`.
`durable=True` also fsyncs the file and its folder, so the rename survives a power cut
(checkpoints, which a resumed run relies on).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from colorize.common.errors import UserError, disk_full, disk_full_line


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object], durable: bool = False) -> Path:
    """`write(tmp)`, then rename tmp to `path`; returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden, with path's suffix last (np.save appends .npy to any other name), and the
    # pid, so that two processes writing one file never share a temporary.
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
        if durable:
            _fsync(path.parent)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, UserError):  # a nested write's own line (ingest's shards inside its manifest's write)
            raise
        if isinstance(e, OSError) or disk_full(e):  # torch wraps a full disk in a RuntimeError
            raise UserError(write_failure(path, e)) from None
        raise
    return path


def write_failure(path: Path, e: BaseException) -> str:
    """One line for a failed write of `path`."""
    if disk_full(e):
        return disk_full_line(f"writing {path}", path.parent)
    return f"cannot write {path}: {getattr(e, 'strerror', None) or e}"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: str | os.PathLike, obj, **dumps) -> Path:
    """`obj` as indented JSON with a final newline, atomically (reports, metrics)."""
    text = json.dumps(obj, indent=2, **dumps) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


# Rows per parquet row group, for the tables the stages write and read a block at a time
# (ingest's and curate's manifests, split's): a reader holds one group, not the table.
ROW_GROUP = 4096


def read_columns(path: str | os.PathLike, columns: tuple[str, ...]):
    """Those of `columns` a parquet table has, as a DataFrame. A stage that reads only the
    columns it uses keeps ~10x less per row than one reading all 64 of the split manifest
    (strings become Python objects, and pyarrow's pool keeps what the conversion used)."""
    import pandas as pd
    import pyarrow.parquet as pq

    present = set(pq.read_schema(path).names)
    return pd.read_parquet(path, columns=[c for c in columns if c in present])


def write_parquet_in_groups(df, path: str | os.PathLike, rows: int = ROW_GROUP) -> None:
    """`df.to_parquet(path, index=False, row_group_size=rows)`, converted to Arrow `rows` at
    a time: the whole table's conversion held a second copy of it (~0.9 kB a row of the
    curated manifest). The same table read back; the schema is the first block's, so a
    column must not be all None there and hold strings later (none of ours are)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    first = pa.Table.from_pandas(df.iloc[:rows], preserve_index=False)
    with pq.ParquetWriter(path, first.schema) as writer:
        writer.write_table(first)
        for start in range(rows, len(df), rows):
            writer.write_table(pa.Table.from_pandas(df.iloc[start:start + rows], schema=first.schema,
                                                    preserve_index=False))
