"""The folder-hash definition on the Python side alone (test/hash.test.ts checks it against TypeScript on one tree)."""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from ratioloop_py.errors import BadInput  # noqa: E402
from ratioloop_py.io import HashPathError, folder_entries, sha256_path  # noqa: E402


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_order_is_utf8_bytes_of_the_whole_relative_path(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b").write_bytes(b"1")
    (tmp_path / "a-c").write_bytes(b"2")  # '-' < '/': before a/b, though Path ordering puts a/b first
    (tmp_path / "\U0001F600").write_bytes(b"3")
    (tmp_path / "\uff5e").write_bytes(b"4")  # before the astral name in UTF-8 (after it in UTF-16)
    (tmp_path / ".hidden").write_bytes(b"x")
    assert [r for r, _ in folder_entries(tmp_path)] == ["a-c", "a/b", "\uff5e", "\U0001F600"]
    lines = [("a-c", b"2"), ("a/b", b"1"), ("\uff5e", b"4"), ("\U0001F600", b"3")]
    assert sha256_path(tmp_path) == sha(b"".join(r.encode() + b"\0" + sha(c).encode() + b"\n" for r, c in lines))


def test_symlinks_into_a_blob_store_are_followed(tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    (blobs / "b1").write_bytes(b"weights")
    snap = tmp_path / "snapshots" / "rev"
    snap.mkdir(parents=True)
    os.symlink("../../blobs/b1", snap / "model.safetensors")
    assert sha256_path(snap) == sha(b"model.safetensors\0" + sha(b"weights").encode() + b"\n")


def test_broken_symlink_is_bad_input(tmp_path: Path) -> None:
    os.symlink("nowhere", tmp_path / "w")
    with pytest.raises(HashPathError, match="w: broken symlink") as e:
        sha256_path(tmp_path)
    assert isinstance(e.value, BadInput)
