"""Safe archive extraction: nothing lands outside the target, whatever the archive says.

Refused, with a one-line error naming the member:
- absolute paths and `..` components (`/etc/x`, `../x`);
- symbolic and hard links, unless they point inside the target;
- device files and FIFOs;
- more than `max_bytes` in total (a tar bomb).
A truncated or corrupt archive is reported as such. Extraction goes to a temporary
sibling folder that is renamed into place only when every member is out, so a failure
never leaves a half-extracted target behind.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from colorize.common.errors import UserError


class ArchiveError(UserError):
    """An archive that is unsafe, truncated or too large to extract."""


def _check_member(m: tarfile.TarInfo, root: Path, archive: Path) -> None:
    name = m.name
    parts = PurePosixPath(name).parts
    if name.startswith("/") or PurePosixPath(name).is_absolute() or ".." in parts:
        raise ArchiveError(f"{archive}: refusing member {name!r}: it would land outside {root}")
    if m.issym() or m.islnk():
        link = PurePosixPath(m.linkname)
        base = PurePosixPath(name).parent if m.issym() else PurePosixPath()
        resolved = Path(os.path.normpath(root / base / link))
        if link.is_absolute() or not resolved.is_relative_to(root):
            raise ArchiveError(f"{archive}: refusing link {name!r} -> {m.linkname!r}: it points outside {root}")
    if m.isdev() or m.isfifo():
        raise ArchiveError(f"{archive}: refusing special file {name!r}")


def extract_tar(archive: Path, target: Path, max_bytes: int) -> list[str]:
    """Extract a (possibly compressed) tar into `target`; return the member names."""
    archive, target = Path(archive), Path(target)
    root = target.resolve()
    staging = target.with_name(target.name + ".extracting")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    names, total = [], 0
    try:
        with tarfile.open(archive, "r:*") as tar:
            for m in tar:  # streaming: a truncated file fails here, mid-way
                _check_member(m, root, archive)
                total += m.size
                if total > max_bytes:
                    raise ArchiveError(
                        f"{archive}: more than {max_bytes} bytes when extracted; "
                        f"raise data.download.max_extract_bytes if this is expected"
                    )
                # The "data" filter re-checks paths and links and drops unsafe modes.
                tar.extract(m, staging, filter="data")
                names.append(m.name)
    except (tarfile.ReadError, tarfile.CompressionError, EOFError, zlib.error, OSError) as e:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(e, OSError) and not isinstance(e, EOFError) and e.errno is not None:
            raise ArchiveError(f"{archive}: cannot extract ({e.strerror}); check free disk space") from None
        raise ArchiveError(
            f"{archive}: truncated or corrupt archive ({type(e).__name__}: {e}); delete it from the "
            f"download cache and rerun"
        ) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return names
