"""The guidance library (configs/guidance/*.yaml) and how guidance enters both models' context.

Each YAML file describes one domain:

    domain: SAFETY            # SAFETY | REASONING | CHAT
    mode: both                # none | system | exemplar | both
    system: ""                # system prompt; the empty string still adds an (empty) system turn
    exemplars:
      - id: weapons-refusal
        criterion: One sentence saying what a good answer does.
        user: the example request
        good: the good answer
        bad: the bad answer
        explanation: why the good one is better
      - id: raw-block
        text: "... a pre-written block that ends with 'User:' ..."

As in the paper (arXiv 2411.02481), a guided prompt gets an (empty) system turn, and its last user turn becomes
    <exemplar block ending in "User: "> + query + "\\nGood Assistant:"
so that both the strong and the weak model score the response as the "good assistant" of a worked example.
The exemplar is drawn from the domain's pool by a hash of (run seed, prompt id): reproducible, and recorded
as guidance_id. The paper drew it unseeded.

Two sources (score.guidance.source):
  ratioloop – this library (the offline default); a prompt's own system message is kept (system_policy keep),
              the domain's system text, if any, going before it.
  cdr       – the reference code's pools (SAFETY 3, REASONING 10 blocks), read at run time from the reference
              repository (cdr_reference): the block, "\\n", the query, "\\nGood Assistant:"; an existing system
              message is replaced by the empty one (system_policy replace); CHAT unguided.
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BadInput
from .io import read_yaml

LABELS = ("CHAT", "SAFETY", "REASONING")
MODES = ("none", "system", "exemplar", "both")
SYSTEM_POLICIES = ("keep", "replace")
QUERY_SUFFIX = "\nGood Assistant:"


@dataclass
class Exemplar:
    id: str
    text: str  # the rendered block, ending with "User: "


@dataclass
class Domain:
    label: str
    mode: str = "none"
    system: str | None = None
    exemplars: list[Exemplar] = field(default_factory=list)
    source: str = ""
    system_policy: str = "keep"  # what happens to a prompt's own system message when this domain guides it


def render_exemplar(ex: dict[str, Any]) -> str:
    """criterion, then User / Good Assistant / Bad Assistant / Explanation, ending with "User: "."""
    if "text" in ex:
        text = str(ex["text"])
        return text if text.endswith(" ") or text.endswith("\n") else text + " "
    return (f"{ex['criterion'].strip()}\n\n"
            f"User: {ex['user'].strip()}\n"
            f"Good Assistant: {ex['good'].strip()}\n"
            f"Bad Assistant: {ex['bad'].strip()}\n"
            f"Explanation: {ex['explanation'].strip()}\n\n"
            f"User: ")


def _parse_domain(path: Path) -> Domain:
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a mapping with domain, mode, system, exemplars")
    label = str(data.get("domain", "")).upper()
    if label not in LABELS:
        raise BadInput(f"{path}: domain must be one of {', '.join(LABELS)}, got {data.get('domain')!r}")
    mode = str(data.get("mode", "none"))
    if mode not in MODES:
        raise BadInput(f"{path}: mode must be one of {', '.join(MODES)}, got {mode!r}")
    system = data.get("system")
    if system is not None and not isinstance(system, str):
        raise BadInput(f"{path}: system must be a string (empty allowed)")
    exemplars = []
    seen = set()
    for k, ex in enumerate(data.get("exemplars") or []):
        where = f"{path}: exemplars[{k}]"
        if not isinstance(ex, dict) or not ex.get("id"):
            raise BadInput(f"{where}: needs an id")
        if "text" not in ex:
            missing = [f for f in ("criterion", "user", "good", "bad", "explanation") if not ex.get(f)]
            if missing:
                raise BadInput(f"{where} ({ex['id']}): missing {', '.join(missing)}")
        if ex["id"] in seen:
            raise BadInput(f"{where}: duplicate id {ex['id']!r}")
        seen.add(ex["id"])
        exemplars.append(Exemplar(id=str(ex["id"]), text=render_exemplar(ex)))
    if mode in ("exemplar", "both") and not exemplars:
        raise BadInput(f"{path}: mode {mode} needs at least one exemplar")
    if mode in ("system", "both") and system is None:
        system = ""
    policy = str(data.get("system_policy", "keep"))
    if policy not in SYSTEM_POLICIES:
        raise BadInput(f"{path}: system_policy must be one of {', '.join(SYSTEM_POLICIES)}, got {policy!r}")
    return Domain(label=label, mode=mode, system=system, exemplars=exemplars, source=str(path), system_policy=policy)


def load_library(folder: str | Path | None) -> dict[str, Domain]:
    """All *.yaml/*.yml files of a folder, keyed by domain label. A domain without a file is unguided."""
    lib: dict[str, Domain] = {}
    if folder is None:
        return lib
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInput(f"guidance folder {folder} does not exist")
    for path in sorted(list(folder.glob("*.yaml")) + list(folder.glob("*.yml"))):
        dom = _parse_domain(path)
        if dom.label in lib:
            raise BadInput(f"{path}: domain {dom.label} is already defined in {lib[dom.label].source}")
        lib[dom.label] = dom
    return lib


def reference_library(prompts_py: str | Path) -> dict[str, Domain]:
    """The CDR reference guidance (src/prompts.py of the reference repository) as a library: SAFETY and REASONING
    with their DOMAIN_MAP pools, the reference's system text for vanilla_domain (empty) replacing a prompt's own,
    and the reference joiner (block + "\\n" + query + "\\nGood Assistant:"); CHAT unguided."""
    from .cdr_reference import GUIDED, parse_prompts

    ref = parse_prompts(Path(prompts_py))
    lib: dict[str, Domain] = {}
    for label in GUIDED:
        seen: dict[str, int] = {}
        exemplars = []
        for name, block in ref.pools[label]:
            seen[name] = seen.get(name, 0) + 1  # a name listed twice in one pool stays two draws, as in random.choice
            ex_id = name if seen[name] == 1 else f"{name}#{seen[name]}"
            exemplars.append(Exemplar(id=ex_id, text=block + "\n"))
        lib[label] = Domain(label=label, mode="both", system=ref.system, exemplars=exemplars,
                            source=f"{prompts_py}:DOMAIN_MAP[{label!r}]", system_policy="replace")
    return lib


def load_guidance(source: str, folder: str | Path | None, cdr_repo: str | Path | None = None,
                  cdr_cache: str | Path | None = None) -> tuple[dict[str, Domain], dict[str, Any]]:
    """(library, what was loaded: for the manifest). source ratioloop = the YAML folder; cdr = the reference's
    src/prompts.py from a local clone (cdr_repo) or the pinned download."""
    if source == "ratioloop":
        return load_library(folder), {"source": "ratioloop", "dir": str(folder) if folder else None}
    if source != "cdr":
        raise BadInput(f"params.guidance.source must be ratioloop or cdr, got {source!r}")
    from .cdr_reference import COMMIT, REPO, locate

    ref = locate("src/prompts.py", repo_dir=cdr_repo, cache_dir=cdr_cache)
    lib = reference_library(ref.path)
    return lib, {"source": "cdr", "repo": REPO, "pinned_commit": COMMIT, "local_clone": str(cdr_repo) if cdr_repo else None,
                 **ref.record(), "pools": {lab: [e.id for e in d.exemplars] for lab, d in lib.items()}}


def pick_index(seed: int, prompt_id: str, label: str, n: int) -> int:
    h = hashlib.sha256(f"{seed}\x00{label}\x00{prompt_id}".encode()).digest()
    return int.from_bytes(h[:8], "little") % n


def exemplar_chars(original: list[dict[str, str]], guided: list[dict[str, str]]) -> int:
    """How many leading characters of the guided first user message are guidance (the exemplar block),
    which every prompt that drew that exemplar shares; 0 if the guidance went to a later turn or there is none."""
    def first_user(msgs):
        return next((str(m.get("content", "")) for m in msgs if m.get("role") == "user"), None)

    o, g = first_user(original), first_user(guided)
    if o is None or g is None or g == o or not g.endswith(o + QUERY_SUFFIX):
        return 0
    return len(g) - len(o) - len(QUERY_SUFFIX)


def apply_guidance(library: dict[str, Domain], label: str, messages: list[dict[str, str]], *, seed: int,
                   prompt_id: str, enabled: bool = True,
                   system_policy: str | None = None) -> tuple[list[dict[str, str]], str | None]:
    """(messages to render for both models, guidance_id or None when unguided). system_policy overrides the
    domain's: keep = the prompt's own system message stays (the domain's text before it), replace = the domain's
    system text (empty for the reference) takes its place."""
    dom = library.get(label)
    if not enabled or dom is None or dom.mode == "none":
        return messages, None
    msgs = copy.deepcopy(messages)
    gid_parts = []
    if dom.mode in ("exemplar", "both"):
        ex = dom.exemplars[pick_index(seed, prompt_id, label, len(dom.exemplars))]
        last_user = max((i for i, m in enumerate(msgs) if m.get("role") == "user"), default=None)
        if last_user is None:
            raise BadInput(f"prompt {prompt_id}: no user turn to attach guidance to")
        msgs[last_user]["content"] = ex.text + msgs[last_user]["content"] + QUERY_SUFFIX
        gid_parts.append(ex.id)
    if dom.mode in ("system", "both"):
        sys_text = dom.system or ""
        policy = system_policy or dom.system_policy
        if msgs and msgs[0].get("role") == "system":
            if policy == "replace":
                msgs[0]["content"] = sys_text
            elif sys_text:  # keep: the prompt's own system message stays, the domain's text goes before it
                msgs[0]["content"] = sys_text + "\n\n" + msgs[0]["content"]
        else:
            msgs.insert(0, {"role": "system", "content": sys_text})
        if not gid_parts:
            gid_parts.append("system")
    return msgs, f"{label}/{gid_parts[0]}"
