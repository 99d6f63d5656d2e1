"""Oxford Flowers-102 (Nilsback & Zisserman 2008): 8,189 flower photos in 102 classes.

The three official files are downloaded from `data.flowers102.base_url` into the
download cache and checked against their published md5s, the image archive is
extracted safely into `data/raw/flowers102/jpg/`, and every image gets its class (1-102
and its name) and its official split (trnid 1,020 / valid 1,020 / tstid 6,149). The
official split is recorded as information only; our split stage still decides.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import loadmat

from colorize.common.archive import extract_tar
from colorize.common.errors import UserError
from colorize.common.fetch import Transfer, fetch_many
from colorize.sources.listing import Row

FILES = {"images": "102flowers.tgz", "labels": "imagelabels.mat", "setid": "setid.mat"}
OFFICIAL_SPLITS = {"trnid": "train", "valid": "val", "tstid": "test"}

# Class names in label order (label 1 = "pink primrose"), as published with the dataset.
CLASS_NAMES = (
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold",
    "tiger lily", "moon orchid", "bird of paradise", "monkshood", "globe thistle", "snapdragon",
    "colt's foot", "king protea", "spear thistle", "yellow iris", "globe-flower", "purple coneflower",
    "peruvian lily", "balloon flower", "giant white arum lily", "fire lily", "pincushion flower",
    "fritillary", "red ginger", "grape hyacinth", "corn poppy", "prince of wales feathers",
    "stemless gentian", "artichoke", "sweet william", "carnation", "garden phlox", "love in the mist",
    "mexican aster", "alpine sea holly", "ruby-lipped cattleya", "cape flower", "great masterwort",
    "siam tulip", "lenten rose", "barbeton daisy", "daffodil", "sword lily", "poinsettia",
    "bolero deep blue", "wallflower", "marigold", "buttercup", "oxeye daisy", "common dandelion",
    "petunia", "wild pansy", "primula", "sunflower", "pelargonium", "bishop of llandaff", "gaura",
    "geranium", "orange dahlia", "pink-yellow dahlia", "cautleya spicata", "japanese anemone",
    "black-eyed susan", "silverbush", "californian poppy", "osteospermum", "spring crocus",
    "bearded iris", "windflower", "tree poppy", "gazania", "azalea", "water lily", "rose",
    "thorn apple", "morning glory", "passion flower", "lotus", "toad lily", "anthurium", "frangipani",
    "clematis", "hibiscus", "columbine", "desert-rose", "tree mallow", "magnolia", "cyclamen",
    "watercress", "canna lily", "hippeastrum", "bee balm", "ball moss", "foxglove", "bougainvillea",
    "camellia", "mallow", "mexican petunia", "bromelia", "blanket flower", "trumpet creeper",
    "blackberry lily",
)
assert len(CLASS_NAMES) == 102


def image_index(name: str) -> int:
    """`jpg/image_00042.jpg` -> 42 (1-based, as in the .mat files)."""
    return int(Path(name).stem.rsplit("_", 1)[-1])


def read_labels(labels_mat: Path, setid_mat: Path) -> tuple[np.ndarray, dict[int, str]]:
    """Class label per image (index 0 = image 1) and the official split per image index."""
    try:
        labels = loadmat(labels_mat)["labels"].ravel().astype(int)
        setid = loadmat(setid_mat)
        split = {int(i): name for key, name in OFFICIAL_SPLITS.items() for i in setid[key].ravel()}
    except (KeyError, ValueError, OSError) as e:
        raise UserError(f"flowers102: cannot read {labels_mat.name}/{setid_mat.name} ({e}); delete them from the cache") from None
    return labels, split


def fetch_flowers102(data: dict, out_dir: Path) -> list[Row]:
    cfg = data["flowers102"]
    base = cfg["base_url"].rstrip("/")
    items = [{"url": f"{base}/{FILES[k]}", "md5": cfg["md5"][k] or None} for k in FILES]
    results = fetch_many(items, Transfer.from_params(data["download"]), desc="flowers102")
    path = {k: r.path for k, r in zip(FILES, results)}
    names = extract_tar(path["images"], out_dir, max_bytes=data["download"]["max_extract_bytes"])
    labels, official = read_labels(path["labels"], path["setid"])
    rows = []
    for name in sorted(n for n in names if n.lower().endswith(".jpg")):
        i = image_index(name)
        class_id = int(labels[i - 1]) if 1 <= i <= len(labels) else 0
        rows.append(Row(
            source="flowers102",
            path=(out_dir / name).as_posix(),
            relpath=name,
            label=CLASS_NAMES[class_id - 1] if 1 <= class_id <= 102 else "",
            class_id=class_id,
            official_split=official.get(i, ""),
            attribution="Oxford Flowers-102, Nilsback & Zisserman 2008 (VGG, University of Oxford)",
        ))
    return rows
