"""The `--map` file: what the user's score names mean, which tenant or tags a workload id stands for, and how
regenerations are recognised in request logs. A small YAML file; every key is optional:

    scores:
      user-feedback: {meaning: rating}                 # 1/true -> +1, 0/false -> -1
      stars: {meaning: rating, up_at_least: 4, down_at_most: 2}
      helpful: {meaning: rating, up: ["yes"], down: ["no"]}
      copied: {meaning: accept}
      thrown-away: {meaning: regenerate}
      fixed-answer: {meaning: edit}                    # the value is the corrected answer
    workloads:
      support-chat: {tenant: acme, tags: [support]}
    unmapped_workloads: tag                            # tag (default) | ignore
    tenant: acme                                       # for events no workload names a tenant for
    tags: [imported]                                   # added to every event
    regeneration: {window_seconds: 600}
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

MEANINGS = ("rating", "accept", "regenerate", "edit", "ignore")


class MapError(ValueError):
    pass


@dataclass(frozen=True)
class ScoreMeaning:
    meaning: str
    up_at_least: float = 1
    down_at_most: float = 0
    up: tuple = ()
    down: tuple = ()

    def rating(self, value) -> int | None:
        """+1, -1, or None for a value between the thresholds (or outside both category lists)."""
        if isinstance(value, str) and (self.up or self.down):
            return 1 if value in self.up else -1 if value in self.down else None
        if isinstance(value, str):
            low = value.strip().lower()
            value = {"true": 1, "false": 0}.get(low, value)
            try:
                value = float(value)
            except (TypeError, ValueError):
                return None
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, (int, float)):
            return None
        return 1 if value >= self.up_at_least else -1 if value <= self.down_at_most else None


@dataclass(frozen=True)
class ImportMap:
    scores: dict = field(default_factory=dict)
    workloads: dict = field(default_factory=dict)
    unmapped_workloads: str = "tag"
    tenant: str | None = None
    tags: tuple = ()
    window_ms: int = 600_000

    def score(self, name) -> ScoreMeaning | None:
        return self.scores.get(name)

    def placement(self, workload) -> tuple[str | None, list[str] | None]:
        """(tenant, tags) for a workload id: the map's entry, else the id as a tag (or nothing), plus the tags
        every event gets."""
        entry = self.workloads.get(workload) if workload is not None else None
        tenant, tags = self.tenant, list(self.tags)
        if entry is not None:
            tenant = entry.get("tenant", tenant)
            tags += list(entry.get("tags") or [])
        elif workload is not None and self.unmapped_workloads == "tag":
            tags.append(str(workload))
        return tenant, (tags or None)


def load_map(path: str | os.PathLike | None) -> ImportMap:
    if path is None:
        return ImportMap()
    import yaml

    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise MapError(f"{path}: the map must be a YAML mapping")
    known = {"scores", "workloads", "unmapped_workloads", "tenant", "tags", "regeneration"}
    if unknown := sorted(set(raw) - known):
        raise MapError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    scores = {}
    for name, spec in (raw.get("scores") or {}).items():
        spec = {"meaning": spec} if isinstance(spec, str) else dict(spec or {})
        if spec.get("meaning") not in MEANINGS:
            raise MapError(f"{path}: scores.{name}.meaning: {spec.get('meaning')!r} is not one of {MEANINGS}")
        extra = set(spec) - {"meaning", "up_at_least", "down_at_most", "up", "down"}
        if extra:
            raise MapError(f"{path}: scores.{name}: unknown key(s) {', '.join(sorted(extra))}")
        for key in ("up", "down"):
            spec[key] = tuple(spec.get(key) or ())
        scores[str(name)] = ScoreMeaning(**spec)
    workloads = {str(k): dict(v or {}) for k, v in (raw.get("workloads") or {}).items()}
    for name, spec in workloads.items():
        if set(spec) - {"tenant", "tags"}:
            raise MapError(f"{path}: workloads.{name}: only tenant and tags are allowed")
        _check_placement(path, f"workloads.{name}.", spec)
    _check_placement(path, "", raw)
    if raw.get("unmapped_workloads", "tag") not in ("tag", "ignore"):
        raise MapError(f"{path}: unmapped_workloads must be tag or ignore")
    window = (raw.get("regeneration") or {}).get("window_seconds", 600)
    if not isinstance(window, (int, float)) or window < 0:
        raise MapError(f"{path}: regeneration.window_seconds must be a number >= 0")
    return ImportMap(scores=scores, workloads=workloads, unmapped_workloads=raw.get("unmapped_workloads", "tag"),
                     tenant=raw.get("tenant"), tags=tuple(raw.get("tags") or ()), window_ms=int(window * 1000))


def _check_placement(path, where: str, spec: dict) -> None:
    """A tenant is text or null and tags are a list of text: what the capture schema takes."""
    if spec.get("tenant") is not None and not isinstance(spec["tenant"], str):
        raise MapError(f"{path}: {where}tenant: {spec['tenant']!r} is not text (quote it)")
    tags = spec.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise MapError(f"{path}: {where}tags: {tags!r} is not a list of text")
