"""Gate configuration: defaults for every check, overridden by a YAML file; unknown keys are errors.

Every threshold lives here, named, with the reason for its default, so that a gate report's `config` says exactly
what the adapter was held to.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "alpha": 0.05,  # two-sided level of every interval (95 %); the slices' family-wise error rate
    "min_items": 20,  # fewer held-out pairs (or answers, for checks that need them) -> INSUFFICIENT_DATA
    "scorer": {"max_batch_tokens": 16384, "max_length": 2048, "prefix_sharing": "auto", "dtype": "auto",
               "device": None},
    "checks": {
        "preference": {
            "enabled": True,
            # Movement: the interval's lower bound of the share of pairs moved toward the user's choice must be
            # above this. 0.5 is what a random or untrained adapter gets.
            "min_share": 0.5,
            # Ranking: fail when the adapter ranks pairs significantly worse than the base (McNemar p < alpha and
            # a negative difference), in either view listed here.
            "ranking_views": ["summed", "normalized"],
        },
        "fit": {"enabled": True, "margin": 0.05},  # nats/token the held-out answers' NLL may rise (upper bound)
        "generation": {
            "enabled": True,
            "max_prompts": 64,
            # "auto": 1.25x the longest held-out final answer (in the base's tokens), so that no reply is cut off
            # shorter than the answer it is compared with; a cut-off reply is an edit the user never saw.
            "max_new_tokens": "auto",
            "do_sample": True,  # seeded sampling: greedy decoding of small models loops on one word
            "temperature": 0.7,
            "top_p": 0.95,
            "batch_size": 16,
            # Pass: the upper bound of (adapter - base) edit cost below -min_improvement (0: strictly better).
            # With require_improvement false, non-inferiority instead: upper bound at most max_worse.
            "require_improvement": True,
            "min_improvement": 0.0,
            "max_worse": 0.02,
            # Mean reply length of the adapter over the base's must stay inside this band.
            "length_ratio_band": [0.5, 2.0],
        },
        "general": {
            "enabled": True,
            "path": None,  # a JSONL of {"text"} to use instead of the eval set's frozen general.jsonl
            "margin": 0.1,  # nats/token the general text's NLL may rise (upper bound)
            # For real models: lm-evaluation-harness tasks through its `peft=` argument (pip install lm-eval).
            # {"tasks": [...], "limit": n, "margin": accuracy points the adapter may lose}; null = off.
            "lm_eval": None,
        },
        "guardrails": {
            "enabled": True,
            # Likelihood displacement: the held-out chosen answers' mean per-token log-prob may fall by at most
            # this (lower bound of adapter - base).
            "chosen_logp_margin": 0.1,
            # Probes: [{"name", "prompts": [...], "pattern": regex, "expect": "match"|"no_match"}]. The adapter's
            # share of replies meeting the expectation may fall by at most probe_margin.
            "probes": [],
            "probe_margin": 0.0,
            "probe_max_new_tokens": 48,
        },
        "slices": {
            "enabled": True,
            "keys": ["signal", "tags", "tenant"],
            "min_n": 10,
            # A slice is tested only with at least this many users in it (fewer: "insufficient", never
            # "regressed"): with 3 users a t interval has 2 degrees of freedom and is about 4 standard errors wide.
            "min_users": 4,
            # Multiplicity across all slice tests: "holm" (family-wise error at alpha) or "bh" (false discovery
            # rate at alpha, Benjamini-Hochberg).
            "correction": "holm",
            # A slice regresses when its one-sided test, corrected across slices, rejects "no worse than": movement share upper bound below
            # 0.5 - movement_margin; fit NLL difference lower bound above fit_margin; edit-cost difference lower
            # bound above edit_cost_margin.
            "movement_margin": 0.0,
            "fit_margin": 0.05,
            "edit_cost_margin": 0.0,
        },
    },
    # Each check is "required" (the gate passes iff every required check passes) or "advisory" (reported, and a
    # failure is a warning). The ranking views are advisory: they re-test the pairs preference_movement already
    # tests (three tests of one question would triple the chance of a false failure) and stay at 0 % for models
    # that learned when chosen answers are longer (docs/gate.md). A check not named here is required.
    "roles": {"preference_ranking_summed": "advisory", "preference_ranking_normalized": "advisory"},
    # Planning: `eval freeze` warns when the held-out users are too few for a one-sided alpha/2 t test to detect an
    # effect of `effect_size` standard deviations of the users' differences (Cohen's d) with 80 % power.
    "power": {"effect_size": 1.0},
    "overlap": {
        # An eval item whose request id is in the adapter's training data, or whose prompt is, makes the gate
        # refuse. Builds whose lineage cannot be checked (missing folder, changed manifest) refuse too, unless
        # on_unverifiable is "warn".
        "max_prompt_share": 0.0,
        "on_unverifiable": "error",
    },
    "cache": {"enabled": True, "dir": None},  # base scores, by (base weights, eval set, scoring settings)
    "tracker": {"report_to": "auto", "project": None},  # auto: the training run's tracker (wandb), or none
}


class GateConfigError(ValueError):
    """A gate configuration, eval set or adapter the gate cannot use (exit code 2)."""


def _merge(base: dict, override: dict, where: str) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key not in base:
            raise GateConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(base))})")
        if isinstance(base[key], dict) and value is not None:
            if not isinstance(value, dict):
                raise GateConfigError(f"{where}.{key}: expected a mapping, got {value!r}")
            out[key] = _merge(base[key], value, f"{where}.{key}")
        else:
            out[key] = value
    return out


def load_config(config: str | Path | dict | None) -> dict:
    """Defaults merged with a YAML file path or a dict; raises GateConfigError naming the bad key."""
    if config is None:
        return copy.deepcopy(DEFAULTS)
    where = "gate config"
    if not isinstance(config, dict):
        path = Path(config)
        where = str(path)
        if not path.is_file():
            raise GateConfigError(f"{path}: gate config file not found")
        try:
            config = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise GateConfigError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(config, dict):
            raise GateConfigError(f"{path}: expected a mapping at the top level")
    # Roles name checks, not settings: any check name may be given one, so they merge without the known-key rule.
    roles = config.get("roles") or {}
    if not isinstance(roles, dict):
        raise GateConfigError(f"{where}.roles: expected a mapping of check name to required|advisory")
    cfg = _merge(DEFAULTS, {k: v for k, v in config.items() if k != "roles"}, where)
    cfg["roles"].update(roles)
    _validate(cfg, where)
    return cfg


def _validate(cfg: dict, where: str) -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise GateConfigError(f"{where}: {msg}")

    need(cfg["scorer"]["prefix_sharing"] in (True, False, "auto"), "scorer.prefix_sharing must be true, false or auto")
    need(0 < cfg["alpha"] < 1, f"alpha must be in (0, 1), got {cfg['alpha']!r}")
    need(isinstance(cfg["min_items"], int) and cfg["min_items"] >= 1, "min_items must be a positive integer")
    checks = cfg["checks"]
    need(0 <= checks["preference"]["min_share"] < 1, "checks.preference.min_share must be in [0, 1)")
    need(set(checks["preference"]["ranking_views"]) <= {"summed", "normalized"},
         "checks.preference.ranking_views: only 'summed' and 'normalized'")
    mnt = checks["generation"]["max_new_tokens"]
    need(mnt == "auto" or (isinstance(mnt, int) and not isinstance(mnt, bool) and mnt >= 1),
         f"checks.generation.max_new_tokens must be a positive integer or auto, got {mnt!r}")
    band = checks["generation"]["length_ratio_band"]
    need(isinstance(band, list) and len(band) == 2 and 0 < band[0] < band[1],
         "checks.generation.length_ratio_band must be [low, high] with 0 < low < high")
    need(set(checks["slices"]["keys"]) <= {"signal", "tags", "tenant"},
         "checks.slices.keys: only signal, tags, tenant")
    need(isinstance(checks["slices"]["min_users"], int) and checks["slices"]["min_users"] >= 2,
         "checks.slices.min_users must be an integer >= 2")
    need(checks["slices"]["correction"] in ("holm", "bh"), "checks.slices.correction must be holm or bh")
    for name, role in cfg["roles"].items():
        need(role in ("required", "advisory"), f"roles.{name} must be required or advisory, got {role!r}")
    need(cfg["power"]["effect_size"] > 0, "power.effect_size must be > 0")
    for probe in checks["guardrails"]["probes"]:
        need(isinstance(probe, dict) and {"name", "prompts", "pattern"} <= set(probe)
             and probe.get("expect", "match") in ("match", "no_match"),
             f"checks.guardrails.probes: each needs name, prompts, pattern and expect match|no_match: {probe!r}")
    need(cfg["overlap"]["on_unverifiable"] in ("error", "warn"), "overlap.on_unverifiable must be error or warn")
    need(cfg["tracker"]["report_to"] in ("auto", "wandb", "none"), "tracker.report_to must be auto, wandb or none")
