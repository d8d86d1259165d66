"""BuildConfig: every knob of `flywheel data build`, with the defaults documented in docs/data.md."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.events import DEFAULT_MAX_LINE_BYTES

REDACTION_KINDS = ("email", "phone", "card", "api_key")


@dataclass
class BuildConfig:
    # Tenants: with several in the input, name one or ask for all of them (never mixed by accident).
    tenant: str | None = None
    all_tenants: bool = False
    # Stop at the first quarantined line instead of setting it aside.
    strict: bool = False
    # Lines longer than this many bytes are filtered (reason `oversized_line`) before parsing.
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES

    # Edit pairs: an edit that only changes whitespace, case or punctuation, or changes fewer than
    # `min_edit_chars` characters (Levenshtein), is trivial and gives no preference pair.
    min_edit_chars: int = 3
    # Regeneration rankings: at most this many pairs per turn (0 = no cap).
    max_pairs_per_turn: int = 4

    # Filters (None disables a limit).
    drop_empty: bool = True
    max_prompt_chars: int | None = 32_000
    max_completion_chars: int | None = 16_000
    tokenizer: str | None = None  # a path to a fast tokenizer (tokenizer.json or a folder); enables max_tokens
    max_tokens: int | None = 4096  # prompt + completion, checked only with a tokenizer
    near_duplicate_prompts: bool = False  # keep one turn per normalised prompt text

    # Redaction of text fields before anything else sees them; any of REDACTION_KINDS.
    redact: list[str] = field(default_factory=list)

    # Splits: the unit (user or session) is hashed with the seed; a `test_fraction` of units is held out.
    split_by: str = "user"
    test_fraction: float = 0.1
    split_seed: int = 0
    # Optional: test examples must be at/after this time and train examples before it (others dropped).
    time_cutoff: str | int | None = None
    remove_test_prompts_from_train: bool = True

    # KTO rows are shuffled with this seed (KTOTrainer reads them in order).
    shuffle_seed: int = 0
    # Which datasets to build; the others are not written, and events only they would use are dropped with the
    # reason `kind_not_built`.
    kinds: list[str] = field(default_factory=lambda: ["sft", "dpo", "kto"])

    def __post_init__(self) -> None:
        if self.split_by not in ("user", "session"):
            raise ValueError(f"split_by must be 'user' or 'session', got {self.split_by!r}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        unknown = set(self.redact) - set(REDACTION_KINDS)
        if unknown:
            raise ValueError(f"redact: unknown kind(s) {sorted(unknown)}; known: {', '.join(REDACTION_KINDS)}")
        unknown_kinds = set(self.kinds) - {"sft", "dpo", "kto"}
        if unknown_kinds or not self.kinds:
            raise ValueError(f"kinds: a non-empty list of sft, dpo, kto; got {self.kinds!r}")
        if self.tenant is not None and self.all_tenants:
            raise ValueError("give either tenant or all_tenants, not both")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "BuildConfig":
        d = dict(d or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown build config key(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "BuildConfig":
        import yaml

        with open(path) as f:
            d = yaml.safe_load(f) or {}
        if not isinstance(d, dict):
            raise ValueError(f"{path}: a build config is a mapping of keys to values")
        return cls.from_dict(d)

    def replace(self, **overrides: Any) -> "BuildConfig":
        return BuildConfig.from_dict({**self.to_dict(), **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
