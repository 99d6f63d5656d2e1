"""People's decisions: `data/curation/decisions.csv` (id, decision, reason, time), in git.

A decision is `reject` with a reason, `keep` (which overrules an automatic drop), or
`hard`: a hard example, kept as `keep` is, that training draws more often
(`train.hard_tag_weight`). In the FiftyOne App a person tags a sample `reject` plus
`reason:<why>` (or the shorthand `reject:<why>`), `keep` or `hard`; `tags_to_decision`
and `decision_to_tags` translate. One decision per image: `reject` wins over `hard`,
and `hard` over `keep` (it keeps the image too). The
file is a dependency of relevance and curate, so `dvc repro` reapplies every decision,
even after the database is deleted.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from colorize.common import paths
from colorize.common.errors import UserError
from colorize.common.files import atomic_write

DECISION_COLUMNS = ["id", "decision", "reason", "time"]
HUMAN_TAGS = ("reject", "keep", "hard")
REASON_PREFIX = "reason:"


def read_decisions(path: Path = paths.DECISIONS) -> pd.DataFrame:
    if not Path(path).exists():
        return pd.DataFrame(columns=DECISION_COLUMNS)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = set(DECISION_COLUMNS) - set(df.columns)
    if missing:
        raise UserError(f"{path}: missing columns {sorted(missing)}; expected {', '.join(DECISION_COLUMNS)}")
    bad = df.loc[~df["decision"].isin(HUMAN_TAGS), "decision"]
    if len(bad):
        raise UserError(f"{path}: decision must be one of {', '.join(HUMAN_TAGS)}, got {bad.iloc[0]!r}")
    return df[DECISION_COLUMNS]


def write_decisions(df: pd.DataFrame, path: Path = paths.DECISIONS) -> None:
    df = df[DECISION_COLUMNS].sort_values("id").reset_index(drop=True)
    atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))  # people's work: never half-written


def apply_decisions(curated: pd.DataFrame, decisions: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Human decisions override automatic ones (`hard` keeps as `keep` does, and sets the
    `hard` column); unknown ids warn, never crash."""
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
    df["hard"] = df["human"] == "hard"
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
        elif t == "hard" and decision != "reject":
            decision = "hard"
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
    return [decision]  # keep, hard


def is_human_tag(tag: str) -> bool:
    return tag in HUMAN_TAGS or tag.startswith("reject:") or tag.startswith(REASON_PREFIX)
