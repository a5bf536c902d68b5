"""File I/O shared by every stage: JSONL with line numbers, atomic writes, content hashes."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import BadInput


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line_number, row) for each non-blank line; a malformed line is a BadInput naming it."""
    p = Path(path)
    if not p.exists():
        raise BadInput(f"{p}: file not found")
    with p.open("r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise BadInput(f"{p}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise BadInput(f"{p}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """A YAML file's content; malformed YAML is a BadInput naming the file."""
    import yaml

    p = Path(path)
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise BadInput(f"{p}: not valid YAML ({e})") from None


def read_json(path: str | os.PathLike[str]) -> Any:
    """A JSON file's content; malformed JSON is a BadInput naming the file and line."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BadInput(f"{p}:{e.lineno}: not valid JSON ({e.msg})") from None


def read_jsonl_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    return [row for _, row in read_jsonl(path)]


def _atomic_open(path: Path, mode: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    return os.fdopen(fd, mode, encoding="utf-8" if "b" not in mode else None), Path(tmp)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers never see half a file."""
    p = Path(path)
    f, tmp = _atomic_open(p, "w")
    try:
        with f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def atomic_write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    lines = []
    for row in rows:
        lines.append(json.dumps(row, ensure_ascii=False))
        n += 1
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return n


class JsonlAppender:
    """Append rows to a partial shard, flushed and fsynced per batch so a kill loses at most one batch.

    On open, a torn last line (from a kill mid-write) is cut off, so the shard is always whole rows.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            data = self.path.read_bytes()
            cut = data.rfind(b"\n") + 1
            if cut != len(data):
                with self.path.open("r+b") as f:
                    f.truncate(cut)
        self._f = self.path.open("a", encoding="utf-8")

    def write_batch(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_partial_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a partial shard, ignoring a torn last line."""
    p = Path(path)
    if not p.exists():
        return []
    rows = []
    for line in p.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class HashPathError(BadInput):
    """A folder cannot be hashed: a broken symlink or a symlink cycle inside it."""


def _list_files(root: Path, rel: str, chain: frozenset[str], out: list[tuple[bytes, str, Path]]) -> None:
    # `chain` holds the real paths of the folders above, so a link back up is an error rather than an endless walk.
    for name in os.listdir(root):
        if name.startswith("."):
            continue
        full = root / name
        r = f"{rel}/{name}" if rel else name
        try:
            st = full.stat()  # follows symlinks
        except FileNotFoundError:
            if full.is_symlink():
                raise HashPathError(f"{r}: broken symlink (points to {os.readlink(full)})") from None
            raise
        if stat.S_ISDIR(st.st_mode):
            real = os.path.realpath(full)
            if real in chain:
                raise HashPathError(f"{r}: symlink cycle (leads back to {real})")
            _list_files(full, r, chain | {real}, out)
        elif stat.S_ISREG(st.st_mode):
            out.append((r.encode("utf-8"), r, full))
        # sockets, fifos and devices carry no content: not part of the hash


def folder_entries(path: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """The files a folder's hash covers, in hash order (relative path, path)."""
    out: list[tuple[bytes, str, Path]] = []
    _list_files(Path(path), "", frozenset({os.path.realpath(path)}), out)
    return [(r, f) for _, r, f in sorted(out, key=lambda e: e[0])]


def sha256_path(path: str | os.PathLike[str]) -> str:
    """Content hash of a file's bytes, or of a folder: the definition in src/contentHash.ts (docs/architecture.md).

    Every regular file below the folder, symlinks followed to their targets, names starting with "." skipped at any
    depth, as "relative/path\0sha256hex\n" lines sorted by the UTF-8 bytes of the relative path.
    """
    p = Path(path)
    if not p.is_dir():
        if p.is_symlink() and not p.exists():
            raise HashPathError(f"{p}: broken symlink (points to {os.readlink(p)})")
        return sha256_file(p)
    h = hashlib.sha256()
    for rel, f in folder_entries(p):
        h.update(rel.encode("utf-8") + b"\0" + sha256_file(f).encode() + b"\n")
    return h.hexdigest()


def count_jsonl_rows(path: str | os.PathLike[str]) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())
