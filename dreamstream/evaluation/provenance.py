"""What a number was computed from: the commit a final evaluation scored, and the events a checkpoint learnt.

Two records, one purpose: a reader of a number can tell whether it was
measured on data the model never saw.

* :func:`commit_record` — ``evaluate --final`` scores the test window once
  per release and writes which commit (and whether the tree had
  uncommitted changes) produced the table.
* :func:`data_record` / :func:`trained_events` — ``train`` writes, into the
  checkpoint's ``config.json``, the checksum of the ``.inter`` file, its time
  range and the cutoff it was fitted to (events at or after the cutoff were
  held out); ``evaluate --checkpoint`` scores only events after the cutoff
  and refuses, in one line, when the data holds none.
"""
from __future__ import annotations

import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from dreamstream.checksums import sha256_file
from dreamstream.data.recbole import Dataset
from dreamstream.errors import UserError


def commit_record(where: Path | None = None) -> dict:
    """``{"commit", "dirty", "scored_at"}`` of the source tree holding ``where`` (this package by default)."""
    folder = Path(where or Path(__file__).resolve().parent)

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=30,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD") or "unknown (not a git checkout)"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"commit": commit, "dirty": dirty, "scored_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(float(ts), timezone.utc).isoformat(timespec="seconds")


def inter_file(ds: Dataset) -> Path:
    """The ``.inter`` file a dataset was read from (its events)."""
    path = Path(ds.path)
    return path if path.suffix == ".inter" else path / f"{ds.name}.inter"


def data_record(ds: Dataset, cutoff: float | None) -> dict:
    """What a checkpoint was trained on: the events file's sha256, its time range, and the training cutoff.

    ``cutoff`` (epoch seconds): training used the events strictly before it;
    None: every event (the cutoff is then just after the last one).
    """
    last = float(ds.timestamp.max()) if ds.n_interactions else 0.0
    cut = last + 1.0 if cutoff is None else float(cutoff)
    return {"inter_sha256": sha256_file(inter_file(ds)), "first_event": iso(ds.timestamp.min()) if ds.n_interactions
            else None, "last_event": iso(last), "trained_before": cut, "trained_before_iso": iso(cut),
            "trained_events": int((ds.timestamp < cut).sum())}


def trained_events(config: dict) -> float:
    """The checkpoint's training cutoff (epoch seconds); a checkpoint without one is refused."""
    data = config.get("data", {})
    if "trained_before" not in data:
        raise UserError("this checkpoint does not record the events it was trained on (written before provenance "
                        "was recorded): retrain it with `dreamstream train --train-until ...` to hold out a tail")
    return float(data["trained_before"])


def held_out_start(ds: Dataset, config: dict, checkpoint: Path) -> float:
    """The first scoreable time: the checkpoint's cutoff; refuses with one line when ``ds`` has no event after it."""
    cut = trained_events(config)
    after = int((ds.timestamp >= cut).sum())
    if after == 0:
        same = config["data"].get("inter_sha256") == sha256_file(inter_file(ds))
        raise UserError(f"{checkpoint} was trained on every event of {ds.path} before {iso(cut)} "
                        f"({'the same file' if same else 'a different file'}, none after it): refusing to score "
                        f"events it was trained on; train with --train-until to hold out a tail")
    return cut


def parse_until(value: str, ds: Dataset) -> float:
    """A training cutoff as epoch seconds: a share of the events in (0, 1), epoch seconds, or an ISO date/time (UTC).

    A share falls on a timestamp boundary (no second is split between
    training and the held-out tail).
    """
    try:
        number = float(value)
    except ValueError:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise UserError(f"--train-until {value!r}: give a share of the events (0.8), epoch seconds, or an ISO "
                            "date such as 1998-01-24") from None
        return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
    if 0 < number < 1:
        ts = np.sort(ds.timestamp)
        return float(ts[min(int(ts.size * number), ts.size - 1)])
    return number


def dataset_before(ds: Dataset, cutoff: float) -> Dataset:
    """``ds`` with only its events strictly before ``cutoff`` (ids, items and features unchanged)."""
    import dataclasses

    keep = ds.timestamp < cutoff
    if not keep.any():
        raise UserError(f"no event of {ds.path} is before {iso(cutoff)}: nothing to train on")
    return dataclasses.replace(ds, user=ds.user[keep], item=ds.item[keep], rating=ds.rating[keep],
                               timestamp=ds.timestamp[keep], columns={k: v[keep] for k, v in ds.columns.items()})
