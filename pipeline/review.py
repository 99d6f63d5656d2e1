"""Human review in the FiftyOne App, with every decision kept in git.

The curate stage mirrors the curated manifest into a persistent FiftyOne dataset
(`sync_dataset`): one sample per file found, every check's score as a field, a
`flag:<check>` tag per flag, and saved views to review. People then tag samples in
the App:

- `reject` plus a reason tag `reason:<why>` (e.g. `reason:irrelevant`), or the
  shorthand `reject:<why>`;
- `keep`, to overrule an automatic drop.

`export_decisions` writes those tags to `data/curation/decisions.csv`
(id, decision, reason, time): on leaving `make review` (Ctrl-C, `kill`, or closing the
terminal), and with `python -m pipeline.review sync`. The file is tracked in git and is a
dependency of curate, so `dvc repro` reapplies every decision, even after the database is
deleted; and `review` itself rebuilds a lost dataset from curate's outputs (the curated
manifest and decisions.csv).

    python -m pipeline.review app [--port 5151]   # the App on 127.0.0.1; syncs on exit
    python -m pipeline.review sync                # export the App's decisions now
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import signal
import sys
import warnings
from pathlib import Path

import pandas as pd

from pipeline import fodb
from pipeline.errors import UserError, run_main
from pipeline.files import atomic_write
from pipeline.tracking import project_root

DECISIONS = Path("data/curation/decisions.csv")
DECISION_COLUMNS = ["id", "decision", "reason", "time"]
DATASET = "colorize"
HUMAN_TAGS = ("reject", "keep")
FLAG_PREFIX = "flag:"
REASON_PREFIX = "reason:"
SERVER_GRACE_S = 3  # the App's server exits within ~2.5 s of SIGTERM
# Fields mirrored from the curated manifest into each sample (when present).
FIELDS = (
    "cid", "source", "relpath", "label", "status", "keep", "reason", "auto_reason", "detail",
    "defect", "negative", "duplicate_of", "near_dup_group", "relevance", "chroma_p95",
    "tint_score", "hue_spread", "dark_score", "light_score", "blur_score", "info_score", "aspect_ratio",
)


# ----------------------------------------------------------------------------- decisions.csv


def read_decisions(path: Path = DECISIONS) -> pd.DataFrame:
    if not Path(path).exists():
        return pd.DataFrame(columns=DECISION_COLUMNS)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = set(DECISION_COLUMNS) - set(df.columns)
    if missing:
        raise UserError(f"{path}: missing columns {sorted(missing)}; expected {', '.join(DECISION_COLUMNS)}")
    bad = df.loc[~df["decision"].isin(HUMAN_TAGS), "decision"]
    if len(bad):
        raise UserError(f"{path}: decision must be 'reject' or 'keep', got {bad.iloc[0]!r}")
    return df[DECISION_COLUMNS]


def write_decisions(df: pd.DataFrame, path: Path = DECISIONS) -> None:
    df = df[DECISION_COLUMNS].sort_values("id").reset_index(drop=True)
    atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))  # people's work: never half-written


def apply_decisions(curated: pd.DataFrame, decisions: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Human decisions override automatic ones; unknown ids warn, never crash."""
    df = curated.copy()
    df["auto_reason"] = df["reason"]
    df["human"] = ""
    known = set(df["id"])
    unknown = sorted(set(decisions["id"]) - known)
    messages = [f"decision for unknown id {i} ignored (no longer in the data)" for i in unknown]
    pos = {i: p for p, i in enumerate(df["id"])}
    for row in decisions.itertuples(index=False):
        if row.id not in pos:
            continue
        p = pos[row.id]
        df.iat[p, df.columns.get_loc("human")] = row.decision
        if row.decision == "reject":
            df.iat[p, df.columns.get_loc("reason")] = f"human:{row.reason or 'unspecified'}"
        elif df.iat[p, df.columns.get_loc("reason")] != "" and df.iat[p, df.columns.get_loc("status")] == "ok":
            df.iat[p, df.columns.get_loc("reason")] = ""  # a person kept what a check dropped
        # an unreadable file cannot be kept: there are no pixels to train on
    df["keep"] = df["reason"] == ""
    return df, messages


def tags_to_decision(tags: list[str]) -> tuple[str, str] | None:
    """Sample tags -> (decision, reason), or None without a human decision."""
    reason = ""
    decision = None
    for t in tags:
        if t == "reject" or t.startswith("reject:"):
            decision = "reject"
            if t.startswith("reject:"):
                reason = t.split(":", 1)[1]
        elif t == "keep" and decision is None:
            decision = "keep"
        elif t.startswith(REASON_PREFIX):
            reason = t[len(REASON_PREFIX):]
    if decision is None:
        return None
    return decision, (reason or "unspecified") if decision == "reject" else ""


def decision_to_tags(decision: str, reason: str) -> list[str]:
    if decision == "reject":
        return ["reject"] + ([REASON_PREFIX + reason] if reason and reason != "unspecified" else [])
    return ["keep"]


def _is_human_tag(tag: str) -> bool:
    return tag in HUMAN_TAGS or tag.startswith("reject:") or tag.startswith(REASON_PREFIX)


# ----------------------------------------------------------------------------- FiftyOne dataset


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return value


def _absolute(path: str) -> str:
    p = Path(path)
    return str(p if p.is_absolute() else (project_root() / p).resolve())


def sync_dataset(curated: pd.DataFrame, decisions: pd.DataFrame, name: str = DATASET, flag_columns=()):
    """Create or refresh the persistent dataset; only new or changed samples are written.

    `flag_columns` are boolean columns (`flag_tinted` or `tinted`); each True becomes
    a `flag:tinted` tag, and each gets a saved view of what it flagged.
    """
    import fiftyone as fo

    import fiftyone.core.media as fom

    ds = fo.load_dataset(name) if fo.dataset_exists(name) else fo.Dataset(name, persistent=True)
    df = curated.rename(columns={"id": "cid"})
    # An image dataset holds only files FiftyOne takes for images by their name: the
    # first sample fixes the dataset's media type, so a README.md or a .mov in a photo
    # folder would make every photo after it "not match". Such files are still in the
    # curated manifest, dropped as unreadable; the App just cannot show them.
    is_image = df["path"].map(lambda p: fom.get_media_type(str(p)) == fom.IMAGE)
    if not is_image.all():
        print(f"review: {int((~is_image).sum())} file(s) not named as images (e.g. "
              f"{Path(df.loc[~is_image, 'path'].iloc[0]).name}) are left out of the FiftyOne dataset")
        df = df[is_image]
    fields = [f for f in FIELDS if f in df.columns]
    existing = dict(zip(ds.values("cid"), ds.values("id"))) if len(ds) else {}
    wanted = set(df["cid"])
    gone = [sid for cid, sid in existing.items() if cid not in wanted]
    if gone:
        ds.delete_samples(gone)

    human = {r.id: decision_to_tags(r.decision, r.reason) for r in decisions.itertuples(index=False)}
    new_rows = df[~df["cid"].isin(existing)]
    samples = []
    for row in new_rows.to_dict("records"):
        flags = [FLAG_PREFIX + c.removeprefix("flag_") for c in flag_columns if row.get(c)]
        s = fo.Sample(filepath=_absolute(row["path"]), tags=flags + human.get(row["cid"], []))
        for f in fields:
            s[f] = _clean(row[f])
        samples.append(s)
    if samples:
        ds.add_samples(samples, progress=True)

    # Changed fields and flag tags of samples that were already there, in bulk.
    old = df[df["cid"].isin(existing)]
    unsynced = 0
    if len(old):
        view = ds.select_by("cid", list(old["cid"]))
        current = dict(zip(view.values("cid"), view.values("tags")))
        schema = ds.get_field_schema()
        for f in fields:
            values = dict(zip(old["cid"], (_clean(v) for v in old[f])))
            # A field whose values were all missing so far (relevance before the classifier
            # ran) is not in the schema yet: nothing to compare with; set_values declares it.
            have = dict(zip(view.values("cid"), view.values(f))) if f in schema else {}
            changed = {c: v for c, v in values.items() if have.get(c) != v}
            if changed:
                view.select_by("cid", list(changed)).set_values(f, changed, key_field="cid")
        new_tags = {}
        for row in old.to_dict("records"):
            tags = current[row["cid"]]
            mine = [t for t in tags if _is_human_tag(t)]
            if row["cid"] in human and not mine:
                mine = human[row["cid"]]  # the database lost them (or never had them): restore
            elif row["cid"] in human and tags_to_decision(mine) != tags_to_decision(human[row["cid"]]):
                unsynced += 1  # newer decisions in the App: keep them, they are exported on sync
            elif row["cid"] not in human and mine:
                unsynced += 1
            others = [t for t in tags if not t.startswith(FLAG_PREFIX) and not _is_human_tag(t)]  # a reviewer's own
            tags_now = [FLAG_PREFIX + c.removeprefix("flag_") for c in flag_columns if row.get(c)] + mine + others
            if sorted(tags_now) != sorted(tags):
                new_tags[row["cid"]] = tags_now
        if new_tags:
            ds.select_by("cid", list(new_tags)).set_values("tags", new_tags, key_field="cid")
    if unsynced:
        warnings.warn(
            f"{unsynced} sample(s) have App decisions not in {DECISIONS}: run `python -m pipeline.review sync` "
            f"to keep them (curate used the file)",
            stacklevel=2,
        )
    save_views(ds, [c.removeprefix("flag_") for c in flag_columns])
    return ds


def save_views(ds, flag_columns) -> None:
    """The views reviewers start from: one per check, relevance, near duplicates, kept set."""
    from fiftyone import ViewField as F

    for check in flag_columns:
        ds.save_view(f"flagged-{check.replace('_', '-')}", ds.match_tags(FLAG_PREFIX + check), overwrite=True)
    if "relevance" in ds.get_field_schema():
        ds.save_view("least-relevant-first", ds.exists("relevance").sort_by("relevance"), overwrite=True)
    if "near_dup_group" in ds.get_field_schema():
        ds.save_view(
            "near-duplicate-groups",
            ds.match(F("near_dup_group") >= 0).sort_by([("near_dup_group", 1), ("keep", -1)]),
            overwrite=True,
        )
    ds.save_view("kept", ds.match(F("keep") == True), overwrite=True)  # noqa: E712 - a query, not a bool
    ds.save_view("dropped", ds.match(F("keep") == False).sort_by("reason"), overwrite=True)  # noqa: E712


def mirror_curated(curated: pd.DataFrame, decisions: pd.DataFrame, name: str = DATASET):
    """The review dataset from a curated manifest and the decisions: curate's last step, and
    review's own when the database lost the dataset."""
    flag_columns = [c for c in curated.columns if c.startswith("flag_")]
    return sync_dataset(curated, decisions, name, flag_columns=flag_columns)


def open_dataset(name: str = DATASET):
    """The review dataset, rebuilt when the database lost it (`rm -rf .fiftyone`, a new machine).

    `dvc repro curate` would not rebuild it: the stage's inputs did not change. Its outputs
    hold all it needs: the curated manifest and decisions.csv, the truth for every decision.
    """
    import fiftyone as fo

    if not fo.dataset_exists(name):
        from pipeline.curate import MANIFEST  # imported here: curate brings torch

        if not MANIFEST.exists():
            raise UserError(f"FiftyOne dataset {name!r} not found, and {MANIFEST} is missing too: "
                            f"run `dvc repro -f -s curate` (or `dvc pull` where a remote has it)")
        print(f"review: FiftyOne dataset {name!r} not found (database deleted?); "
              f"rebuilding it from {MANIFEST} and {DECISIONS}", file=sys.stderr)
        mirror_curated(pd.read_parquet(MANIFEST), read_decisions(), name)
    return fo.load_dataset(name)


def export_decisions(name: str = DATASET, path: Path = DECISIONS) -> pd.DataFrame:
    """The App's human tags -> decisions.csv. Decisions for ids no longer in the dataset stay."""
    ds = open_dataset(name)
    old = read_decisions(path)
    old_by_id = {r.id: r for r in old.itertuples(index=False)}
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    rows = []
    in_dataset = set()
    for cid, tags in zip(ds.values("cid"), ds.values("tags")):
        in_dataset.add(cid)
        d = tags_to_decision(tags)
        if d is None:
            continue
        prev = old_by_id.get(cid)
        same = prev is not None and (prev.decision, prev.reason) == d
        rows.append({"id": cid, "decision": d[0], "reason": d[1], "time": prev.time if same else now})
    for r in old.itertuples(index=False):
        if r.id not in in_dataset:
            print(f"review: keeping decision for {r.id}, which is not in the dataset", file=sys.stderr)
            rows.append(r._asdict())
    out = pd.DataFrame(rows, columns=DECISION_COLUMNS)
    write_decisions(out, path)
    return out


class _StopOnSignals:
    """Ctrl-C, `kill` and closing the terminal all end the App the same way: decisions saved.

    Installed explicitly: a command started with `&` from a script inherits SIGINT ignored,
    and Python then installs no KeyboardInterrupt handler of its own. SIGHUP ignored on
    purpose (`nohup`) stays ignored: the App is meant to outlive the terminal there. The
    first signal stops the App; later ones are ignored, so a second Ctrl-C cannot cut the
    export short.
    """

    def __init__(self):
        self.stopping = False
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
                continue
            signal.signal(sig, self)

    def __call__(self, signum, frame):
        if not self.stopping:
            self.stopping = True
            raise KeyboardInterrupt


def _close_app(session) -> None:
    """Stop the App's server now: left to FiftyOne, it may outlive us by seconds, or for good.

    FiftyOne runs the server under a watcher (`service/main.py --51-service server`) in a
    process group of its own, which Ctrl-C does not reach; the watcher is to stop the
    server when our end of its stdin closes, and exits when the server does. The server
    keeps nothing of its own (tags are in the database): a short grace, then SIGKILL.
    """
    import psutil  # fiftyone's own dependency

    watchers, servers = _app_servers()
    for p in servers:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(servers + watchers, timeout=SERVER_GRACE_S)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    session.close()


def _app_servers() -> tuple[list, list]:
    """FiftyOne's watchers of the App's server among our children, and the servers under them."""
    import psutil

    watchers, servers = [], []
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if "--51-service" in child.cmdline():
                servers += child.children(recursive=True)
                watchers.append(child)
    return watchers, servers


def launch_app(name: str = DATASET, port: int = 5151, address: str = "127.0.0.1") -> None:
    import fiftyone as fo

    ds = open_dataset(name)
    _StopOnSignals()
    session = None
    try:
        session = fo.launch_app(ds, port=port, address=address, auto=False)
        print(f"review: the FiftyOne App is at http://{address}:{port}/ — tag samples `reject` (+ `reason:<why>`) "
              f"or `keep`; press Ctrl-C to save decisions to {DECISIONS}", flush=True)
        session.wait(-1)
    except KeyboardInterrupt:
        pass
    finally:
        out = export_decisions(name)
        with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP); the file is written
            print(f"review: {len(out)} decision(s) saved to {DECISIONS}; commit it, then `dvc repro`", flush=True)
        if session is not None:
            _close_app(session)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.review", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    app = sub.add_parser("app", help="open the FiftyOne App on 127.0.0.1; decisions are saved on exit")
    app.add_argument("--port", type=int, default=5151)
    app.add_argument("--address", default="127.0.0.1", help="bind address (default: loopback only)")
    app.add_argument("--dataset", default=DATASET)
    sync = sub.add_parser("sync", help="export the App's decisions to data/curation/decisions.csv")
    sync.add_argument("--dataset", default=DATASET)
    args = parser.parse_args(argv)
    with fodb.database():
        if args.command == "app":
            launch_app(args.dataset, args.port, args.address)
        else:
            out = export_decisions(args.dataset)
            print(f"review: {len(out)} decision(s) in {DECISIONS}")


if __name__ == "__main__":
    run_main(main)
