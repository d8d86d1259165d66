"""The adapter registry: immutable versioned entries, aliases that move atomically, an append-only history.

Layout of a registry (a local folder, or an fsspec URL; see serving/storage.py):

    aliases/<alias>.json         {"alias", "current": "<alias>-vN", "history": [event, ...]}
    versions/<alias>-vN/         one immutable entry per promotion
        adapter/                 copy of the adapter folder's files (what vLLM loads)
        entry.json               content hashes, lineage, base, eval set, gate summary, override if forced
        gate_report.json         copy of the gate report that let it in
    serving/manifest.json        what to serve: base model + every current (and previous) version
    serving/vllm_serve.sh        the matching `vllm serve` command line
    .lock                        fcntl lock that serialises writers

A promotion copies the adapter into a new version folder (which appears in one rename), then replaces the alias
file in one rename; the alias file holds both the pointer and the history, so the pointer and its record can never
disagree. A kill at any point leaves the previous alias file in place; at worst an unreferenced version folder
(never reused: numbers only grow) or a dot-named temporary folder is left behind.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import re
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from flywheel.files import model_weights_sha256, sha256_bytes, sha256_file, sha256_json

from serving.storage import RegistryLocked, open_storage
from serving.vllm import adapter_rank, shell_line, vllm_problems, vllm_serve_command

ALIAS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Files vLLM needs; the gate report must vouch for both.
SERVED_FILES = ("adapter_config.json", "adapter_model.safetensors")

# Exit codes of `flywheel promote` / `rollback`, one per reason, so scripts can tell them apart.
EXIT_NO_GATE_REPORT = 3
EXIT_GATE_FAILED = 4
EXIT_HASH_MISMATCH = 5
EXIT_WRONG_BASE = 6
EXIT_EVAL_SET_OLDER = 7
EXIT_NOT_SERVABLE = 8
EXIT_REGISTRY = 9

REFUSAL_EXIT_CODES = {
    "no_gate_report": EXIT_NO_GATE_REPORT,
    "gate_failed": EXIT_GATE_FAILED,
    "hash_mismatch": EXIT_HASH_MISMATCH,
    "wrong_base": EXIT_WRONG_BASE,
    "eval_set_older": EXIT_EVAL_SET_OLDER,
    "not_servable": EXIT_NOT_SERVABLE,
}
# vLLM would refuse the adapter whatever a human says, so --force cannot override this one.
NOT_OVERRIDABLE = {"not_servable"}


class RegistryError(Exception):
    exit_code = EXIT_REGISTRY


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str

    @property
    def exit_code(self) -> int:
        return REFUSAL_EXIT_CODES[self.code]


# When several refusals apply, the first decides the exit code: what would make a forced promotion ship something
# other than what was gated (changed files, another base) comes before a failed or missing gate.
REFUSAL_ORDER = ["not_servable", "hash_mismatch", "wrong_base", "no_gate_report", "gate_failed", "eval_set_older"]


class PromotionRefused(RegistryError):
    def __init__(self, refusals: list[Refusal], hint: str = ""):
        refusals = sorted(refusals, key=lambda r: REFUSAL_ORDER.index(r.code))
        self.refusals = refusals
        self.exit_code = refusals[0].exit_code
        lines = [f"promotion refused ({r.code}): {r.message}" for r in refusals]
        super().__init__("\n".join(lines) + (f"\n{hint}" if hint else ""))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _who() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _read_json_file(path: Path) -> Any:
    return json.loads(path.read_text())


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, default=str) + "\n").encode()


# ---------------------------------------------------------------------------------------------------------------
# Checks: pure reads of the adapter folder, the gate report, the base weights and the eval set.


def _eval_set_facts(report_eval_set: dict[str, Any]) -> tuple[dict[str, Any], list[Refusal]]:
    facts = dict(report_eval_set)
    path = Path(str(report_eval_set.get("path", "")))
    manifest = path / "eval_set.json" if path.is_dir() else path
    if not manifest.is_file():
        return facts, [Refusal("hash_mismatch", f"eval set {path} named by the gate report is not there to verify")]
    on_disk = _read_json_file(manifest)
    facts["created"] = on_disk.get("created")
    facts.setdefault("version", on_disk.get("version"))
    if on_disk.get("sha256") != report_eval_set.get("sha256"):
        return facts, [Refusal(
            "hash_mismatch",
            f"eval set {manifest}: sha256 {on_disk.get('sha256')} is not the {report_eval_set.get('sha256')} "
            "the gate was run on",
        )]
    # The eval set's sha256 is the hash of its item files' hashes (eval.freeze): check the items themselves too.
    item_hashes = on_disk.get("files") or {}
    for name, sha in sorted(item_hashes.items()):
        item = manifest.parent / name
        actual = sha256_file(item) if item.is_file() else "missing"
        if actual != sha:
            return facts, [Refusal("hash_mismatch", f"eval set item {item}: sha256 {actual} is not the frozen {sha}")]
    if item_hashes and sha256_json(item_hashes) != on_disk.get("sha256"):
        return facts, [Refusal("hash_mismatch", f"{manifest}: field 'sha256' does not match its file hashes")]
    return facts, []


def _eval_set_key(eval_set: dict[str, Any]) -> tuple:
    """Order eval sets by creation time (ISO 8601), then by version when it is a number; unknown sorts first."""
    created = eval_set.get("created")
    try:
        when = datetime.fromisoformat(str(created).replace("Z", "+00:00")).timestamp() if created else None
    except ValueError:
        when = None
    version = eval_set.get("version")
    return (when, version if isinstance(version, (int, float)) else None)


def _older(new: dict[str, Any], old: dict[str, Any]) -> bool:
    if new.get("sha256") == old.get("sha256"):
        return False
    (new_t, new_v), (old_t, old_v) = _eval_set_key(new), _eval_set_key(old)
    if new_t is not None and old_t is not None and new_t != old_t:
        return new_t < old_t
    if new_v is not None and old_v is not None:
        return new_v < old_v
    return False


def _newest_eval_set(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    sets = [e["eval_set"] for e in entries if e.get("eval_set")]
    key = lambda es: tuple(float("-inf") if x is None else x for x in _eval_set_key(es))  # noqa: E731
    return max(sets, key=key, default=None)


def _read_gate_report(report_path: Path) -> tuple[dict[str, Any] | None, list[Refusal]]:
    if not report_path.is_file():
        return None, [Refusal("no_gate_report", f"{report_path} does not exist: run `flywheel eval gate` first")]
    try:
        report = _read_json_file(report_path)
    except json.JSONDecodeError as exc:
        return None, [Refusal("no_gate_report", f"{report_path}: not valid JSON ({exc})")]
    if not isinstance(report, dict) or report.get("kind") != "flywheel.gate_report":
        return None, [Refusal("no_gate_report", f"{report_path}: kind is not 'flywheel.gate_report'")]
    if report.get("decision") != "pass":
        reasons = "; ".join(map(str, report.get("reasons") or [])) or "no reasons given"
        return report, [Refusal("gate_failed", f"{report_path}: decision is {report.get('decision')!r} ({reasons})")]
    return report, []


def _check_adapter_hashes(report: dict[str, Any], report_path: Path, adapter_dir: Path, hashes: dict[str, str],
                          adapter_sha256: str) -> list[Refusal]:
    """Every file the gate hashed must be unchanged, and the gate must have hashed what vLLM loads."""
    refusals = []
    gated = report.get("adapter") or {}
    gated_files = gated.get("files") or {}
    for name in SERVED_FILES:
        if name not in gated_files:
            refusals.append(Refusal("hash_mismatch", f"{report_path}: adapter.files does not vouch for {name}"))
    if gated.get("adapter_sha256") and gated["adapter_sha256"] != adapter_sha256:
        refusals.append(Refusal("hash_mismatch", f"{adapter_dir}: adapter_sha256 {adapter_sha256} is not the "
                                f"{gated['adapter_sha256']} the gate measured"))
    for name, sha in sorted(gated_files.items()):
        if hashes.get(name) != sha:
            refusals.append(Refusal(
                "hash_mismatch",
                f"{adapter_dir / name}: sha256 {hashes.get(name, 'missing')} is not the {sha} the gate measured "
                "(the adapter changed after gating: gate it again)",
            ))
    return refusals


def _check_base(report: dict[str, Any], lineage: dict[str, Any] | None, lineage_path: Path,
                current: dict[str, Any] | None) -> tuple[dict[str, Any], list[Refusal]]:
    """The base weights the gate ran on: still the same on disk, the adapter's, and the alias's."""
    refusals = []
    lineage_base = dict((lineage or {}).get("base_model") or {})
    gated = report.get("base") or {}
    gated_sha = gated.get("weights_sha256")
    base_path = Path(str(gated.get("path", "")))
    if not base_path.is_dir():
        refusals.append(Refusal("hash_mismatch", f"base model {base_path} named by the gate report is not there "
                                "to verify"))
    elif (actual := model_weights_sha256(base_path)) != gated_sha:
        refusals.append(Refusal("hash_mismatch", f"base weights at {base_path}: sha256 {actual} is not the "
                                f"{gated_sha} the gate ran on"))
    if lineage is not None and lineage_base.get("weights_sha256") != gated_sha:
        refusals.append(Refusal("wrong_base", f"{lineage_path}: the adapter was trained on base weights "
                                f"{lineage_base.get('weights_sha256')}, the gate ran on {gated_sha}"))
    served_sha = current["base"].get("weights_sha256") if current else None
    if current is not None and gated_sha and served_sha != gated_sha:
        refusals.append(Refusal("wrong_base", f"alias {current['alias']!r} serves {current['name']} on base weights "
                                f"{served_sha}; this adapter is for base weights {gated_sha}"))
    return {**lineage_base, "path": gated.get("path", lineage_base.get("path")), "weights_sha256": gated_sha}, refusals


def check_promotion(
    adapter_dir: Path, gate_dir: Path, previous_entries: list[dict[str, Any]], current: dict[str, Any] | None
) -> tuple[dict[str, Any], list[Refusal]]:
    """Everything promotion needs to know, and every reason to refuse it (all of them, not only the first).

    `previous_entries`: the entries promoted under this alias so far; `current`: the one the alias points to.
    """
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file() or not (adapter_dir / "adapter_model.safetensors").is_file():
        raise RegistryError(f"{adapter_dir}: not an adapter folder (needs {' and '.join(SERVED_FILES)})")
    try:
        adapter_config = _read_json_file(config_path)
        lineage_path = adapter_dir / "lineage.json"
        lineage = _read_json_file(lineage_path) if lineage_path.is_file() else None
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{adapter_dir}: {exc}") from None
    files = {p.name: p for p in sorted(adapter_dir.iterdir()) if p.is_file()}
    hashes = {name: sha256_file(p) for name, p in files.items()}
    facts: dict[str, Any] = {
        "adapter_config": adapter_config, "lineage": lineage, "files": files, "hashes": hashes,
        "adapter_sha256": sha256_json({n: hashes[n] for n in SERVED_FILES}),
        "base": dict((lineage or {}).get("base_model") or {}), "eval_set": None,
    }
    refusals = [Refusal("not_servable", f"{config_path}: {problem}") for problem in vllm_problems(adapter_config)]

    report_path = gate_dir / "gate_report.json"
    report, found = _read_gate_report(report_path)
    refusals += found
    facts["report"] = report
    facts["report_sha256"] = sha256_file(report_path) if report is not None else None
    if report is None:
        served_sha = current["base"].get("weights_sha256") if current else None
        trained_sha = facts["base"].get("weights_sha256")
        if current is not None and trained_sha and served_sha != trained_sha:
            refusals.append(Refusal("wrong_base", f"alias {current['alias']!r} serves {current['name']} on base "
                                    f"weights {served_sha}; this adapter was trained on {trained_sha}"))
        return facts, refusals

    refusals += _check_adapter_hashes(report, report_path, adapter_dir, hashes, facts["adapter_sha256"])
    facts["base"], found = _check_base(report, lineage, lineage_path, current)
    refusals += found
    facts["eval_set"], found = _eval_set_facts(report.get("eval_set") or {})
    refusals += found
    newest = _newest_eval_set(previous_entries)
    if newest is not None and _older(facts["eval_set"], newest):
        refusals.append(Refusal(
            "eval_set_older",
            f"the gate used eval set {facts['eval_set'].get('path')} (created {facts['eval_set'].get('created')}), "
            f"older than {newest.get('path')} (created {newest.get('created')}) that this alias was last gated on",
        ))
    return facts, refusals


# ---------------------------------------------------------------------------------------------------------------
# The registry itself.


class Registry:
    def __init__(self, registry: str | Path | None = None):
        self.storage = open_storage(registry)

    # paths
    def alias_file(self, alias: str) -> str:
        return self.storage.join("aliases", f"{alias}.json")

    def version_dir(self, name: str) -> str:
        return self.storage.join("versions", name)

    # reads
    def aliases(self) -> list[str]:
        return [n[: -len(".json")] for n in self.storage.listdir(self.storage.join("aliases"))
                if n.endswith(".json") and not n.startswith(".")]

    def alias_state(self, alias: str) -> dict[str, Any] | None:
        path = self.alias_file(alias)
        if not self.storage.exists(path):
            return None
        try:
            state = json.loads(self.storage.read_text(path))
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{path}: not valid JSON ({exc}); it is only ever replaced whole, so it was edited "
                                "by hand") from None
        if state.get("kind") != "flywheel.alias" or not isinstance(state.get("history"), list):
            raise RegistryError(f"{path}: not an alias file (kind {state.get('kind')!r})")
        return state

    def version_names(self, alias: str) -> list[str]:
        """Every version folder of this alias, promoted or left behind by an interrupted promotion, by number."""
        pattern = re.compile(rf"^{re.escape(alias)}-v(\d+)$")
        found = [(int(m.group(1)), n) for n in self.storage.listdir(self.storage.join("versions"))
                 if (m := pattern.match(n))]
        return [n for _, n in sorted(found)]

    def entry(self, name: str) -> dict[str, Any]:
        path = self.storage.join("versions", name, "entry.json")
        if not self.storage.exists(path):
            raise RegistryError(f"{self.storage.url}: no version {name!r}")
        entry = json.loads(self.storage.read_text(path))
        entry["path"] = self.storage.url_for(self.storage.join("versions", name, "adapter"))
        return entry

    def current(self, alias: str) -> dict[str, Any]:
        state = self.alias_state(alias)
        if state is None or not state.get("current"):
            known = ", ".join(self.aliases()) or "none"
            raise RegistryError(f"{self.storage.url}: no alias {alias!r} (aliases: {known})")
        return self.entry(state["current"])

    def verify(self, name: str) -> list[str]:
        """Files of a stored version whose content no longer matches its entry; empty when intact."""
        entry = self.entry(name)
        bad = []
        for rel, sha in entry["adapter"]["files"].items():
            path = self.storage.join("versions", name, "adapter", rel)
            if not self.storage.exists(path) or sha256_bytes(self.storage.read_bytes(path)) != sha:
                bad.append(rel)
        return bad

    @contextlib.contextmanager
    def locked(self, timeout_s: float) -> Iterator[None]:
        try:
            with self.storage.lock(timeout_s):
                yield
        except RegistryLocked as exc:
            raise RegistryError(str(exc)) from None

    def serving_manifest(self) -> dict[str, Any] | None:
        path = self.storage.join("serving", "manifest.json")
        return json.loads(self.storage.read_text(path)) if self.storage.exists(path) else None

    # writes (callers hold the lock)
    def sweep_temporaries(self) -> list[str]:
        """Remove what killed writers left half-made (dot-named temporaries); safe only under the lock."""
        removed = []
        for folder in ("versions", "aliases", "serving"):
            for name in self.storage.listdir(self.storage.join(folder)):
                if name.startswith(".") and (".tmp" in name or ".old-" in name):
                    self.storage.remove(self.storage.join(folder, name))
                    removed.append(f"{folder}/{name}")
        return removed

    def _write_alias(self, state: dict[str, Any]) -> None:
        # The one write that moves the alias: a rename of a complete file over the old one.
        old = (self.alias_state(state["alias"]) or {}).get("history", [])
        if state["history"][: len(old)] != old or len(state["history"]) != len(old) + 1:
            raise RegistryError(f"{self.alias_file(state['alias'])}: the history is append-only, one event per write")
        self.storage.write_text(self.alias_file(state["alias"]), json.dumps(state, indent=2, default=str) + "\n")

    def write_serving_manifest(self) -> dict[str, Any]:
        manifest = build_serving_manifest(self)
        self.storage.write_text(self.storage.join("serving", "manifest.json"), json.dumps(manifest, indent=2) + "\n")
        script = ["#!/bin/sh", "# Written by `flywheel promote`/`rollback` from serving/manifest.json; do not edit.",
                  "export VLLM_ALLOW_RUNTIME_LORA_UPDATING=True  # lets `flywheel serve-sync` add new versions live"]
        for server in manifest["servers"]:
            script += [f"# base weights {server['base'].get('weights_sha256')}", "exec " + server["command_line"]]
        self.storage.write_text(self.storage.join("serving", "vllm_serve.sh"), "\n".join(script) + "\n")
        return manifest


def previous_version(state: dict[str, Any]) -> str | None:
    """The version a rollback goes to: the one the current version replaced when it was promoted."""
    for event in reversed(state.get("history", [])):
        if event["action"] == "promote" and event["to"] == state.get("current"):
            return event["from"]
    return None


def build_serving_manifest(reg: Registry) -> dict[str, Any]:
    """Every alias's current version, plus the one before it (kept loaded for an instant rollback), by base."""
    servers: dict[str, dict[str, Any]] = {}
    for alias in reg.aliases():
        state = reg.alias_state(alias)
        if not state or not state.get("current"):
            continue
        rows = [(state["current"], "current")]
        if (prev := previous_version(state)) is not None:
            rows.append((prev, "previous"))
        for name, role in rows:
            entry = reg.entry(name)
            base = entry["base"]
            server = servers.setdefault(base.get("weights_sha256") or base.get("path"), {
                "base": {"path": base.get("path"), "revision": base.get("revision"),
                         "weights_sha256": base.get("weights_sha256")},
                "adapters": [],
            })
            server["adapters"].append({
                "name": name, "alias": alias, "role": role, "path": entry["path"],
                "sha256": entry["adapter"]["adapter_sha256"], "rank": entry["adapter"]["rank"],
            })
    out = []
    for server in servers.values():
        cmd = vllm_serve_command(server["base"]["path"], server["adapters"])
        out.append({**server, "command": cmd, "command_line": shell_line(cmd)})
    return {"kind": "flywheel.serving_manifest", "format_version": 1, "registry": reg.storage.url,
            "updated": _now(), "servers": out}


def _alias_entries(reg: Registry, state: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not state:
        return []
    names = {e["to"] for e in state.get("history", []) if e["action"] == "promote"}
    return [reg.entry(n) for n in sorted(names)]


def _event(action: str, state: dict[str, Any], to: str, adapter_sha256: str, gate_report_sha256: str | None,
           refusals: list[Refusal], reason: str | None) -> dict[str, Any]:
    return {
        "seq": len(state["history"]) + 1,
        "action": action,
        "from": state["current"],
        "to": to,
        "at": _now(),
        "by": _who(),
        "adapter_sha256": adapter_sha256,
        "gate_report_sha256": gate_report_sha256,
        "forced": bool(refusals),
        "reason": reason,
        "overridden": [r.code for r in refusals],
    }


def promote(
    adapter: str | Path,
    gate_dir: str | Path,
    alias: str,
    registry: str | Path | None = None,
    force: bool = False,
    reason: str | None = None,
    lock_timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Store `adapter` as the next version of `alias` and point the alias at it; returns the new entry.

    Raises PromotionRefused (with `.exit_code` and `.refusals`) when the gate report is missing or failed, when a
    hash no longer matches what the gate measured, when the adapter is for another base, or when the gate used an
    eval set older than the alias's last one. `force=True` with a `reason` overrides all of these except an adapter
    vLLM cannot serve, and records the override in the history.
    """
    if not ALIAS_RE.match(alias) or re.search(r"-v\d+$", alias):
        raise RegistryError(f"alias {alias!r}: use letters, digits, '.', '_' or '-', not ending in -v<number>")
    if force and not (reason and reason.strip()):
        raise RegistryError("--force needs --reason: the history records why the gate was overridden")
    adapter_dir, gate_dir = Path(adapter).resolve(), Path(gate_dir).resolve()
    if not adapter_dir.is_dir():
        raise RegistryError(f"{adapter_dir}: no such adapter folder")
    reg = Registry(registry)
    with reg.locked(lock_timeout_s):
        state = reg.alias_state(alias) or {"kind": "flywheel.alias", "alias": alias, "current": None, "history": []}
        current = reg.entry(state["current"]) if state["current"] else None
        facts, refusals = check_promotion(adapter_dir, gate_dir, _alias_entries(reg, state), current)
        hard = [r for r in refusals if r.code in NOT_OVERRIDABLE]
        if hard:
            raise PromotionRefused(hard)
        if refusals and not force:
            raise PromotionRefused(refusals, hint="(--force --reason TEXT overrides and records it in the history)")

        if current is not None and current["adapter"]["adapter_sha256"] == facts["adapter_sha256"]:
            return current  # already what the alias serves: promoting again changes nothing
        same = [e for e in _alias_entries(reg, state) if e["adapter"]["adapter_sha256"] == facts["adapter_sha256"]]
        if same:
            # The same weights are stored already (promoted, then rolled back): point at that version rather than
            # store a copy under a new name that vLLM would load a second time.
            name = same[-1]["name"]
            event = _event("promote", state, name, facts["adapter_sha256"], facts["report_sha256"], refusals, reason)
            reg._write_alias({**state, "current": name, "updated": event["at"], "history": [*state["history"], event]})
            reg.write_serving_manifest()
            return reg.entry(name)

        reg.sweep_temporaries()
        taken = [int(n.rsplit("-v", 1)[1]) for n in reg.version_names(alias)]
        taken += [int(e["to"].rsplit("-v", 1)[1]) for e in state["history"] if e.get("to")]
        number = max(taken, default=0) + 1
        name = f"{alias}-v{number}"
        report, config = facts["report"], facts["adapter_config"]
        entry = {
            "kind": "flywheel.registry_entry",
            "format_version": 1,
            "name": name,
            "alias": alias,
            "version": number,
            "created": _now(),
            "created_by": _who(),
            "adapter": {
                "source_path": str(adapter_dir),
                "files": facts["hashes"],
                "adapter_sha256": facts["adapter_sha256"],
                "content_sha256": sha256_json(facts["hashes"]),
                "rank": adapter_rank(config),
                "lora_alpha": config.get("lora_alpha"),
                "target_modules": config.get("target_modules"),
                "base_model_name_or_path": config.get("base_model_name_or_path"),
            },
            "base": facts["base"],
            "eval_set": facts.get("eval_set"),
            "gate": None if report is None else {
                "source_path": str(gate_dir),
                "report_sha256": facts["report_sha256"],
                "decision": report.get("decision"),
                "reasons": report.get("reasons"),
                "checks": {k: (v or {}).get("passed") for k, v in (report.get("checks") or {}).items()},
            },
            "lineage": facts["lineage"],
            "forced": bool(refusals),
            "override": None if not refusals else {
                "reason": reason, "refusals": [{"code": r.code, "message": r.message} for r in refusals],
            },
        }
        files: dict[str, Path | bytes] = {f"adapter/{n}": p for n, p in facts["files"].items()}
        files["entry.json"] = _json_bytes(entry)
        if report is not None:
            files["gate_report.json"] = gate_dir / "gate_report.json"
        reg.storage.put_dir(files, reg.version_dir(name))

        event = _event("promote", state, name, facts["adapter_sha256"], facts["report_sha256"], refusals, reason)
        event["at"] = entry["created"]
        reg._write_alias({**state, "current": name, "updated": event["at"], "history": [*state["history"], event]})
        reg.write_serving_manifest()
    return reg.entry(name)


def rollback(
    alias: str,
    registry: str | Path | None = None,
    to: str | None = None,
    reason: str | None = None,
    lock_timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Point `alias` back at the version the current one replaced (or at `to`); returns that version's entry."""
    reg = Registry(registry)
    with reg.locked(lock_timeout_s):
        state = reg.alias_state(alias)
        if state is None or not state.get("current"):
            raise RegistryError(f"{reg.storage.url}: no alias {alias!r} to roll back")
        target = to or previous_version(state)
        if target is None:
            raise RegistryError(f"alias {alias!r}: {state['current']} was its first version; nothing to roll back to")
        if target == state["current"]:
            raise RegistryError(f"alias {alias!r} already points at {target}")
        promoted = {e["to"] for e in state["history"] if e["action"] == "promote"}
        if target not in promoted:
            raise RegistryError(f"alias {alias!r}: {target} was never promoted under it "
                            f"(have: {', '.join(sorted(promoted))})")
        if bad := reg.verify(target):
            raise RegistryError(f"{target}: stored files changed since promotion: {', '.join(bad)}")
        entry = reg.entry(target)
        event = _event("rollback", state, target, entry["adapter"]["adapter_sha256"],
                       (entry.get("gate") or {}).get("report_sha256"), [], reason)
        reg._write_alias({**state, "current": target, "updated": event["at"], "history": [*state["history"], event]})
        reg.write_serving_manifest()
    return entry


def list_registry(registry: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per alias: its current version, and how many versions and history events it has."""
    reg = Registry(registry)
    rows = []
    for alias in reg.aliases():
        state = reg.alias_state(alias) or {}
        current = reg.entry(state["current"]) if state.get("current") else None
        rows.append({
            "alias": alias,
            "current": state.get("current"),
            "previous": previous_version(state) if state else None,
            "versions": reg.version_names(alias),
            "events": len(state.get("history", [])),
            "updated": state.get("updated"),
            "adapter_sha256": current["adapter"]["adapter_sha256"] if current else None,
            "forced": bool(current and current.get("forced")),
        })
    return rows


def show(name: str, registry: str | Path | None = None) -> dict[str, Any]:
    """An alias (its state and history, plus its current entry) or one version's entry."""
    reg = Registry(registry)
    state = reg.alias_state(name) if ALIAS_RE.match(name) else None
    if state is not None:
        promoted = {e["to"] for e in state.get("history", []) if e["action"] == "promote"}
        orphans = [n for n in reg.version_names(name) if n not in promoted]
        return {**state, "current_entry": reg.entry(state["current"]) if state.get("current") else None,
                "unreferenced_versions": orphans}
    entry = reg.entry(name)
    entry["intact"] = not reg.verify(name)
    return entry
