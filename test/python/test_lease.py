"""ratioloop_py/lease.py: who owns a stage folder, as src/stageLease.ts writes it (test/lease.test.ts checks the two
against each other on files the TS side wrote)."""
from __future__ import annotations

import json
import threading
from pathlib import Path

from ratioloop_py import lease


def write(lease_dir: Path, gen: int, token: str, **kw) -> None:
    lease_dir.mkdir(parents=True, exist_ok=True)
    rec = {"version": 1, "generation": gen, "owner": {"host": "h", "pid": 7, "attempt": gen, "token": token},
           "expiresAtMs": 1_000, "ttlMs": 1_000, **kw}
    (lease_dir / f"{gen:012d}.json").write_text(json.dumps(rec))


def test_from_env_needs_all_three() -> None:
    env = {"RATIOLOOP_LEASE_DIR": "/x/.lease", "RATIOLOOP_LEASE_GENERATION": "3", "RATIOLOOP_LEASE_TOKEN": "t"}
    assert lease.from_env(env) == lease.Held(Path("/x/.lease"), 3, "t")
    assert lease.from_env({**env, "RATIOLOOP_LEASE_TOKEN": ""}) is None
    assert lease.from_env({}) is None


def test_owner_until_a_higher_generation_a_foreign_token_or_a_removed_folder(tmp_path: Path) -> None:
    d = tmp_path / ".lease"
    write(d, 2, "mine")
    (d / ".tmp-other-1234").write_text("{")  # a taker's temp file is not a generation
    held = lease.Held(d, 2, "mine")
    assert lease.superseded_by(held) is None
    write(d, 3, "theirs")
    by = lease.superseded_by(held)
    assert by is not None and lease.describe(by) == "host h, pid 7, attempt 3 (generation 3)"
    (d / f"{3:012d}.json").unlink()
    write(d, 2, "someone else")  # same generation, another owner's token
    assert lease.superseded_by(held) is not None
    for f in d.iterdir():
        f.unlink()
    d.rmdir()
    assert lease.describe(lease.superseded_by(held)) == "the lease folder was removed"


def test_is_stale_matches_the_ts_rule() -> None:
    rec = {"expiresAtMs": 1_000}
    assert not lease.is_stale(rec, 1_400, 500)
    assert lease.is_stale(rec, 1_501, 500)
    assert lease.is_stale({**rec, "released": True}, 0, 500)


def test_watch_reports_a_takeover_once_and_ignores_read_errors(tmp_path: Path, monkeypatch) -> None:
    d = tmp_path / ".lease"
    write(d, 1, "mine")
    held = lease.Held(d, 1, "mine")
    lost: list[dict] = []
    seen = threading.Event()
    calls = {"n": 0}
    real = lease.superseded_by

    def flaky(h: lease.Held):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise OSError("stale NFS file handle")
        return real(h)

    monkeypatch.setattr(lease, "superseded_by", flaky)
    stop = lease.watch(held, 0.02, lambda by: (lost.append(by), seen.set()))
    assert not seen.wait(0.2)  # read errors and our own lease: no loss
    write(d, 2, "theirs")
    assert seen.wait(2.0)
    stop.set()
    assert len(lost) == 1 and lost[0]["generation"] == 2
