"""The folder source: any directory tree of images, read in place."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from colorize.common.errors import UserError
from colorize.common.images import NotRead, check_regular_file
from colorize.sources.listing import Row


def fetch_folder(data: dict, out_dir: Path) -> list[Row]:
    """Every non-hidden file under data.folder.path, in place; subfolders become labels.

    Files are not copied: the folder is a DVC dependency of the download stage, so a
    change in it reruns the pipeline, and ingest reads the files where they are.
    Entries that are not files to read (FIFOs, sockets, devices, dangling or looping
    symlinks, symlinked folders, which neither os.walk nor DVC descends into) are listed
    too, and named here: ingest gives each a status and never opens it.
    """
    root = Path(data["folder"]["path"])
    if not root.is_dir():
        raise UserError(f"data.folder.path: {str(root)!r} is not a directory")
    rows = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        linked = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in sorted(filenames + linked):
            if name.startswith("."):
                continue  # .gitkeep, .DS_Store and friends are not photos
            full = Path(dirpath) / name
            _name_if_not_a_file(full)
            rel = full.relative_to(root).as_posix()
            label = Path(rel).parent.as_posix()
            rows.append(Row(source="folder", path=full.as_posix(), relpath=rel, label="" if label == "." else label))
    return rows


def _name_if_not_a_file(path: Path) -> None:
    try:
        check_regular_file(path)
    except NotRead as e:
        print(f"download: folder: {path}: {e.reason} (listed as {e.status})", file=sys.stderr)
