"""Data sources: each turns its params into files on disk plus one listing row per file.

A source is a function `fetch(data_params, out_dir) -> list[Row]`. It may write files
under `out_dir` (the garden generates them; Flowers-102 and Open Images download them
through the cache in fetch.py) or point at files where they already are (a local
folder). Either way it returns one row per file found, so ingest sees every file and
nothing is lost silently. A new source adds a function to SOURCES and its name to
`params.SOURCE_NAMES`.
"""
from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from pipeline import garden
from pipeline.errors import UserError
from pipeline.flowers102 import fetch_flowers102
from pipeline.imageio import NotRead, check_regular_file
from pipeline.openimages import fetch_openimages


@dataclass
class Row:
    source: str  # the data.sources name
    path: str  # where the file is, relative to the project root or absolute
    relpath: str  # its path inside the source: stable, used in ids
    label: str = ""  # class/species/subfolder where known
    attribution: str = ""  # author / licence / URL where known
    defect: str = ""  # planted-defect truth (garden only), "none" for clean
    defect_detail: str = ""
    defect_of: str = ""  # relpath of the original a planted copy was made from
    class_id: int = 0  # numeric class where the source has one (Flowers-102: 1-102)
    labels: str = ""  # every verified label, ";"-separated (Open Images)
    negative: bool = False  # a known non-flower, for the relevance classifier; not training data
    official_split: str = ""  # the source's own split, kept as information only
    author: str = ""  # attribution parts, where the licence asks for them
    license: str = ""
    original_url: str = ""
    fetch_error: str = ""  # why a listed file could not be downloaded ("" = fine)

    def to_dict(self) -> dict:
        return asdict(self)


COLUMNS = tuple(Row.__dataclass_fields__)


def fetch_garden(data: dict, out_dir: Path) -> list[Row]:
    g = data["garden"]
    cfg = garden.GardenConfig(
        n_images=g["n_images"],
        seed=g["seed"],
        min_size=g["min_size"],
        max_size=g["max_size"],
        defect_rate=g["defect_rate"],
    )
    records = garden.generate(out_dir, cfg, progress=True)
    return [
        Row(
            source="garden",
            path=(out_dir / r["path"]).as_posix(),
            relpath=r["path"],
            label=r["label"],
            attribution="synthetic (pipeline/garden.py)",
            defect=r["defect"],
            defect_detail=r["defect_detail"],
            defect_of=r["defect_of"],
        )
        for r in records
    ]


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


SOURCES: dict[str, Callable[[dict, Path], list[Row]]] = {
    "garden": fetch_garden,
    "folder": fetch_folder,
    "flowers102": fetch_flowers102,
    "openimages": fetch_openimages,
}
