"""The CDR reference guidance and router prompt, read at run time from the reference repository.

gx-ai-architect/CDR-preference-annotation (the paper's code, arXiv 2411.02481) has no licence, so ratioloop ships
none of its text: `src/prompts.py` (the exemplar pools, DOMAIN_MAP, SYSTEM_PROMPTS_MAP) and
`scripts/domain_annotate.py` (CLASSIFY_PROMPT) are taken from a user's local clone, or downloaded at the pinned
commit (sha256-checked, cached). The files are Python; they are parsed with `ast` and only string literals, names
bound to them, and dicts/lists of those are read. Nothing downloaded is ever executed.

What the reference does with them (scripts/run_bon_scoring.py, the paper recipe `--insert_system_prompt
vanilla_domain --insert_user_prompt fs_domain_icl`), which ratioloop reproduces:
  * CHAT prompts are unguided (plain density ratio);
  * SAFETY / REASONING prompts get SYSTEM_PROMPTS_MAP["vanilla_domain"] (the empty string) as their system turn,
    replacing an existing one, and their last user turn becomes
        block + "\\n" + query + "\\nGood Assistant:"
    with `block` drawn from DOMAIN_MAP[label] (the reference draws it unseeded; ratioloop by a seeded hash).
  * the router asks with CLASSIFY_PROMPT as the system turn and reads the label between the first [START] and the
    following [END]; anything else is CHAT (extract_domain_class).
"""
from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import BadInput
from .io import sha256_file

REPO = "gx-ai-architect/CDR-preference-annotation"
COMMIT = "3cdb608a0b643721130d3ae51738b676ef9d4973"
# sha256 of the files at COMMIT (see docs/guidance.md).
FILES: dict[str, str] = {
    "src/prompts.py": "5dfd190d1cf385ac1c5a45bcaf9d718eda6b2b6625a66f16ce1b0f6fe6fc0c85",
    "scripts/domain_annotate.py": "fd64e79d9c53cb2b43e0e347a6315f37cbdce7a404a681d3e25259b3abddf5f1",
}
GUIDED = ("SAFETY", "REASONING")  # vanilla_domain: CHAT stays unguided
SYSTEM_KEY = "vanilla_domain"


@dataclass
class ReferenceFile:
    rel: str
    path: Path
    sha256: str
    pinned: bool  # the content equals the pinned file

    def record(self) -> dict[str, object]:
        return {"file": self.rel, "sha256": self.sha256, "pinned": self.pinned}


def default_cache_dir() -> Path:
    root = Path(__file__).resolve().parents[2]
    return Path(os.environ.get("RATIOLOOP_CDR_CACHE") or (root / ".ratioloop" / "cache" / "cdr"))


def raw_url(rel: str, commit: str = COMMIT) -> str:
    return f"https://raw.githubusercontent.com/{REPO}/{commit}/{rel}"


def locate(rel: str, repo_dir: str | os.PathLike[str] | None = None, cache_dir: str | os.PathLike[str] | None = None,
           base_url: str | None = None) -> ReferenceFile:
    """One reference file: from a local clone when given (any commit; its sha256 is recorded and compared with the
    pinned one), else the pinned download (a hash mismatch is an error). base_url replaces the GitHub address
    (tests use a file:// folder in the same layout)."""
    from .evals.data import fetch_pinned

    if rel not in FILES:
        raise ValueError(rel)
    if repo_dir is not None:
        path = Path(repo_dir) / rel
        if not path.is_file():
            raise BadInput(f"{path}: not found; cdr_repo must be a clone of {REPO} (it needs {rel})")
        got = sha256_file(path)
        return ReferenceFile(rel, path, got, got == FILES[rel])
    url = f"{base_url.rstrip('/')}/{rel}" if base_url else raw_url(rel)
    try:
        path = fetch_pinned(url, FILES[rel], cache_dir or default_cache_dir(), f"{COMMIT[:12]}_{rel.replace('/', '_')}")
    except BadInput as e:
        raise BadInput(f"{e}. The CDR reference files are read at run time: offline, set score.cdr_repo to a clone of "
                       f"{REPO}, or use score.guidance.source / score.router.prompt ratioloop") from None
    return ReferenceFile(rel, path, FILES[rel], True)


def _module(path: Path) -> ast.Module:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: not readable as Python source ({e})") from None


def string_constants(path: Path) -> tuple[dict[str, str], dict[str, ast.expr]]:
    """(NAME → string for every top-level `NAME = "literal"`, NAME → expression for the other assignments)."""
    strings: dict[str, str] = {}
    other: dict[str, ast.expr] = {}
    for node in _module(path).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                strings[name] = value.value  # a later assignment wins, as it would in Python
                other.pop(name, None)
            else:
                other[name] = value
                strings.pop(name, None)
    return strings, other


def _string(node: ast.expr, strings: dict[str, str], where: str) -> tuple[str, str]:
    """(name, text) of a string literal or a name bound to one."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return "", node.value
    if isinstance(node, ast.Name) and node.id in strings:
        return node.id, strings[node.id]
    raise BadInput(f"{where}: expected a string or the name of a top-level string, got {ast.dump(node)[:80]}")


def _dict(node: ast.expr | None, where: str) -> list[tuple[str, ast.expr]]:
    if not isinstance(node, ast.Dict):
        raise BadInput(f"{where}: expected a dict literal")
    out = []
    for k, v in zip(node.keys, node.values):
        if not (isinstance(k, ast.Constant) and isinstance(k.value, str)):
            raise BadInput(f"{where}: keys must be string literals")
        out.append((k.value, v))
    return out


@dataclass
class ReferenceGuidance:
    pools: dict[str, list[tuple[str, str]]]  # label → [(exemplar name, block text)] in DOMAIN_MAP order
    system: str  # SYSTEM_PROMPTS_MAP["vanilla_domain"]


def parse_prompts(path: Path) -> ReferenceGuidance:
    strings, other = string_constants(path)
    where = f"{path}: DOMAIN_MAP"
    pools: dict[str, list[tuple[str, str]]] = {}
    for label, value in _dict(other.get("DOMAIN_MAP"), where):
        if not isinstance(value, (ast.List, ast.Tuple)) or not value.elts:
            raise BadInput(f"{where}[{label!r}]: expected a non-empty list of exemplar names")
        pool = []
        for k, e in enumerate(value.elts):
            name, text = _string(e, strings, f"{where}[{label!r}][{k}]")
            pool.append((name or f"{label}-{k}", text))
        pools[label.upper()] = pool
    missing = [lab for lab in GUIDED if lab not in pools]
    if missing:
        raise BadInput(f"{where}: no pool for {', '.join(missing)}")
    sys_map = dict(_dict(other.get("SYSTEM_PROMPTS_MAP"), f"{path}: SYSTEM_PROMPTS_MAP"))
    if SYSTEM_KEY not in sys_map:
        raise BadInput(f"{path}: SYSTEM_PROMPTS_MAP has no {SYSTEM_KEY!r} entry")
    _, system = _string(sys_map[SYSTEM_KEY], strings, f"{path}: SYSTEM_PROMPTS_MAP[{SYSTEM_KEY!r}]")
    return ReferenceGuidance(pools=pools, system=system)


def parse_classify_prompt(path: Path) -> str:
    strings, _ = string_constants(path)
    if "CLASSIFY_PROMPT" not in strings:
        raise BadInput(f"{path}: no top-level string CLASSIFY_PROMPT")
    return strings["CLASSIFY_PROMPT"]


def extract_label(text: object) -> str:
    """The reference's answer rule: the text between the first [START] and the [END] after it, stripped, if it is
    exactly SAFETY, REASONING or CHAT; anything else is CHAT."""
    if not isinstance(text, str) or "[START]" not in text or "[END]" not in text:
        return "CHAT"
    label = text.split("[START]")[1].split("[END]")[0].strip()
    return label if label in ("SAFETY", "REASONING", "CHAT") else "CHAT"
