"""The regression gate: an adapter against its frozen base on a frozen eval set.

    run_gate(adapter, eval_set, out) ->
        resolve the base (lineage), check hashes and training-data overlap   (GateConfigError: exit 2)
        score base (cached) and adapter on pairs, answers, general text;
        generate replies and probe answers                                    (GateEvaluationError: exit 3)
        checks (eval/checks.py) -> decision -> gate_report.{json,md,html} + items.jsonl -> tracker run
        -> the report dict (exit 0 when it passes, 1 when it fails)
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from eval import checks as checks_mod
from eval.config import GateConfigError, load_config
from eval.freeze import EvalSetError, general_texts, load_eval_set, prompt_key
from flywheel.files import atomic_dir, model_weights_sha256, sha256_file, sha256_json, write_json_atomic

GATE_REPORT_KIND = "flywheel.gate_report"
# Bump when scoring changes what a cached base score means.
SCORER_VERSION = 1
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class GateEvaluationError(RuntimeError):
    """Scoring or generation failed (exit code 3)."""


def _cache_root(cfg: dict) -> Path:
    if cfg["cache"]["dir"]:
        return Path(cfg["cache"]["dir"])
    return Path(os.environ.get("FLYWHEEL_CACHE", Path.home() / ".cache" / "flywheel")) / "gate-base-scores"


def _versions() -> dict[str, str | None]:
    from importlib import metadata
    import platform

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("flywheel", "torch", "transformers", "peft", "trl", "numpy", "scipy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


# --- inputs -----------------------------------------------------------------------------------------------------


def read_adapter(adapter: Path) -> tuple[dict | None, dict[str, str]]:
    if not adapter.is_dir():
        raise GateConfigError(f"{adapter}: adapter folder not found")
    missing = [f for f in ADAPTER_FILES if not (adapter / f).is_file()]
    if missing:
        raise GateConfigError(f"{adapter}: not a LoRA adapter folder (missing {', '.join(missing)})")
    lineage = None
    if (adapter / "lineage.json").is_file():
        try:
            lineage = json.loads((adapter / "lineage.json").read_text())
        except json.JSONDecodeError as exc:
            raise GateConfigError(f"{adapter / 'lineage.json'}: not valid JSON ({exc})") from exc
    files = {p.name: sha256_file(p) for p in sorted(adapter.iterdir()) if p.is_file()}
    return lineage, files


def resolve_base(base: str | None, lineage: dict | None, adapter: Path) -> tuple[str, str]:
    """The base model folder and its weights hash; refuses a base whose weights differ from the lineage's."""
    recorded = (lineage or {}).get("base_model") or {}
    path = base or recorded.get("path")
    if not path:
        raise GateConfigError(f"{adapter}: no lineage.json naming the base model; pass --base PATH")
    if not Path(path).is_dir():
        raise GateConfigError(f"base model {path}: folder not found (lineage of {adapter} names it)"
                              if not base else f"base model {path}: folder not found")
    try:
        weights = model_weights_sha256(path)
    except FileNotFoundError as exc:
        raise GateConfigError(str(exc)) from exc
    if recorded.get("weights_sha256") and recorded["weights_sha256"] != weights:
        raise GateConfigError(
            f"base model {path}: weights sha256 {weights[:12]} is not the {recorded['weights_sha256'][:12]} the "
            f"adapter {adapter} was trained on (lineage.json base_model.weights_sha256)")
    return str(Path(path).resolve()), weights


def _training_sources(lineage: dict | None, seen: set[str] | None = None) -> list[dict]:
    """Datasets the adapter saw, including those of the SFT adapter it continued from."""
    if not lineage:
        return []
    seen = seen or set()
    sources = list(lineage.get("datasets") or [])
    sft = lineage.get("sft_adapter") or {}
    sft_path = sft.get("path")
    if sft_path and sft_path not in seen and (Path(sft_path) / "lineage.json").is_file():
        seen.add(sft_path)
        sources += _training_sources(json.loads((Path(sft_path) / "lineage.json").read_text()), seen)
    return sources


def check_overlap(eval_set: dict, lineage: dict | None, cfg: dict) -> dict:
    """Compare the eval items' request ids and prompts with the adapter's training splits (per its lineage)."""
    from datasets import load_from_disk

    oc = cfg["overlap"]
    warnings: list[str] = []
    unverifiable: list[str] = []
    if lineage is None:
        unverifiable.append("the adapter has no lineage.json, so its training data is unknown")
    train_ids: set[str] = set()
    train_prompts: set[str] = set()
    checked = []
    for src in _training_sources(lineage):
        build, kind = Path(src["path"]), src.get("kind")
        manifest = build / "manifest.json"
        if not manifest.is_file():
            unverifiable.append(f"training build {build} is not there to check")
            continue
        if src.get("manifest_sha256") and sha256_file(manifest) != src["manifest_sha256"]:
            unverifiable.append(f"training build {build}: manifest.json changed since training "
                                "(sha256 differs from lineage)")
            continue
        kinds = [kind] if kind else [k for k in ("sft", "dpo", "kto") if (build / k).is_dir()]
        for k in kinds:
            if not (build / k).is_dir():
                unverifiable.append(f"training build {build}: no {k} folder")
                continue
            train = load_from_disk(str(build / k))["train"]
            train_ids.update(str(r) for r in train["request_id"] if r is not None)
            column = "messages" if k == "sft" else "prompt"
            for value in train[column]:
                train_prompts.add(prompt_key(value[:-1] if k == "sft" else value))
            checked.append(f"{build}/{k}")
    for message in unverifiable:
        if oc["on_unverifiable"] == "error":
            raise GateConfigError(f"cannot check the eval set against the adapter's training data: {message} "
                                  "(set overlap.on_unverifiable: warn to gate anyway)")
        warnings.append(message)
    items = eval_set["pairs"] + eval_set["answers"]
    id_hits = sorted({str(i["request_id"]) for i in items if i.get("request_id") is not None
                      and str(i["request_id"]) in train_ids})
    prompt_hits = [i["id"] for i in items if prompt_key(i["prompt"]) in train_prompts]
    share = len(prompt_hits) / len(items) if items else 0.0
    result = {"checked": checked, "request_id_overlap": len(id_hits), "prompt_overlap": len(prompt_hits),
              "prompt_overlap_share": share, "warnings": warnings}
    if id_hits:
        raise GateConfigError(f"eval set {eval_set['path']} overlaps the adapter's training data: {len(id_hits)} "
                              f"request ids are in its training splits (e.g. {', '.join(id_hits[:3])}); "
                              "freeze an eval set from data the adapter did not train on")
    if share > oc["max_prompt_share"]:
        raise GateConfigError(f"eval set {eval_set['path']} overlaps the adapter's training data: "
                              f"{len(prompt_hits)} of {len(items)} eval prompts ({share:.1%}) occur in its "
                              f"training splits (allowed: overlap.max_prompt_share={oc['max_prompt_share']})")
    return result


# --- scoring ----------------------------------------------------------------------------------------------------


def _score_side(scorer, es: dict, cfg: dict, probes: list[dict]) -> dict:
    from eval.scorer import tokenize_chat, tokenize_text

    cc = cfg["checks"]
    tok = scorer.tokenizer
    side: dict[str, Any] = {}
    pair_items = [tokenize_chat(tok, p["prompt"], [p["chosen"], p["rejected"]]) for p in es["pairs"]]
    side["pairs"] = [[c.logp, c.n_tokens, r.logp, r.n_tokens] for c, r in scorer.score(pair_items)]
    answer_items = [tokenize_chat(tok, a["prompt"], [a["answer"]]) for a in es["answers"]]
    side["answers"] = [[s[0].logp, s[0].n_tokens] for s in scorer.score(answer_items)]
    general_items = [tokenize_text(tok, g["text"]) for g in es["general_items"]]
    side["general"] = [[s[0].logp, s[0].n_tokens] for s in scorer.score(general_items)]
    side["replies"] = []
    gc = cc["generation"]
    if gc["enabled"]:
        prompts = [a["prompt"] for a in es["answers"][: gc["max_prompts"]]]
        side["replies"] = scorer.generate(prompts, gc["max_new_tokens"], gc["do_sample"], gc["temperature"],
                                          gc["top_p"], cfg["seed"], gc["batch_size"])
    side["probes"] = {}
    for probe in probes:
        prompts = [[{"role": "user", "content": p}] for p in probe["prompts"]]
        side["probes"][probe["name"]] = scorer.generate(prompts, cc["guardrails"]["probe_max_new_tokens"],
                                                        seed=cfg["seed"])
    return side


def auto_max_new_tokens(base_path: str, answers: list[dict]) -> int:
    """1.25x the longest final answer among the prompts the gate generates for, in the base's tokens (>= 16)."""
    from transformers import AutoTokenizer

    from eval.scorer import tokenize_chat

    tok = AutoTokenizer.from_pretrained(base_path)
    longest = max((len(tokenize_chat(tok, a["prompt"], [a["answer"]])[1][0]) for a in answers), default=0)
    return max(16, math.ceil(1.25 * longest))


def _base_cache_key(base_sha: str, es: dict, cfg: dict, probes: list[dict]) -> str:
    sc = cfg["scorer"]
    return sha256_json({
        "scorer_version": SCORER_VERSION, "base_weights": base_sha, "eval_set": es["sha256"],
        "general": es["general_sha256"], "max_length": sc["max_length"], "dtype": sc["dtype"],
        "generation": cfg["checks"]["generation"] if cfg["checks"]["generation"]["enabled"] else None,
        "probes": probes, "probe_tokens": cfg["checks"]["guardrails"]["probe_max_new_tokens"], "seed": cfg["seed"],
    })


def score(adapter: Path, base_path: str, base_sha: str, es: dict, cfg: dict, probes: list[dict],
          show_progress: bool = True) -> tuple[dict, dict, dict]:
    """(base side, adapter side, scoring facts). The base side comes from the cache when it can."""
    from rich.progress import Progress

    from eval.scorer import Scorer, load_model

    sc = cfg["scorer"]
    key = _base_cache_key(base_sha, es, cfg, probes)
    cache_file = _cache_root(cfg) / f"{key}.json"
    base_side = None
    if cfg["cache"]["enabled"] and cache_file.is_file():
        try:
            base_side = json.loads(cache_file.read_text())
        except json.JSONDecodeError:
            base_side = None  # a torn cache file is recomputed, never trusted
    facts: dict[str, Any] = {"base_scores": "cache" if base_side is not None else "computed",
                             "base_cache_key": key}
    model, tok = load_model(base_path, str(adapter), dtype=sc["dtype"], device=sc["device"])
    n_gen = min(len(es["answers"]), cfg["checks"]["generation"]["max_prompts"]) \
        if cfg["checks"]["generation"]["enabled"] else 0
    per_side = len(es["pairs"]) + len(es["answers"]) + len(es["general_items"]) + n_gen \
        + sum(len(p["prompts"]) for p in probes)
    with Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task("gate: scoring", total=per_side * (1 if base_side is not None else 2))
        scorer = Scorer(model, tok, sc["max_batch_tokens"], sc["max_length"], sc["prefix_sharing"],
                        progress=lambda n: progress.advance(task, n))
        t0 = time.perf_counter()
        if base_side is None:
            with scorer.base():
                base_side = _score_side(scorer, es, cfg, probes)
            if cfg["cache"]["enabled"]:
                write_json_atomic(cache_file, base_side, indent=None)
        facts["base_seconds"] = round(time.perf_counter() - t0, 3)
        t1 = time.perf_counter()
        adapter_side = _score_side(scorer, es, cfg, probes)
        facts["adapter_seconds"] = round(time.perf_counter() - t1, 3)
    facts["device"] = str(scorer.device)
    facts["vocab_size"] = len(tok)
    return base_side, adapter_side, facts


def general_set_warning(general_check: dict | None, vocab_size: int | None) -> str | None:
    """A warning when the base scores the general set near chance: non-inferiority on text it cannot model is noise.

    Chance is ln(vocab size) nats/token (a uniform guess); at 75 % of it and above the base has learned little of
    the text (the tiny model scores 13 nats/token on real English, with ln 4096 = 8.3).
    """
    if not general_check or general_check.get("base") is None or not vocab_size:
        return None
    chance = math.log(vocab_size)
    if general_check["base"] < 0.75 * chance:
        return None
    return (f"general_nll: the base scores {general_check['base']:.2f} nats/token on the general set, near chance "
            f"for its {vocab_size} tokens ({chance:.2f}): it does not model this text, so non-inferiority on it "
            "says little; freeze the eval set with text the base models well (flywheel eval freeze --general)")


def _lm_eval(adapter: Path, base_path: str, lc: dict) -> dict:
    """Optional general benchmark through lm-evaluation-harness (`pip install flywheel[lm-eval]`)."""
    try:
        import lm_eval
    except ImportError as exc:
        raise GateConfigError("checks.general.lm_eval is set but lm-evaluation-harness is not installed "
                              "(pip install 'flywheel[lm-eval]')") from exc
    results = {}
    for name, model_args in (("base", f"pretrained={base_path}"),
                             ("adapter", f"pretrained={base_path},peft={adapter}")):
        out = lm_eval.simple_evaluate(model="hf", model_args=model_args, tasks=list(lc["tasks"]),
                                      limit=lc.get("limit"))
        results[name] = {t: v.get("acc,none") for t, v in out["results"].items()}
    diffs = {t: results["adapter"][t] - results["base"][t] for t in results["base"]
             if results["base"][t] is not None and results["adapter"].get(t) is not None}
    margin = lc.get("margin", 0.01)
    worst = min(diffs.values()) if diffs else 0.0
    check = {"passed": worst >= -margin, "status": "ok", "statistic": "lm-evaluation-harness accuracy",
             "base": results["base"], "adapter": results["adapter"], "diff": diffs, "interval": None,
             "n": len(diffs), "threshold": {"each_task_may_fall_by_at_most": margin},
             "method": "lm_eval.simple_evaluate(model='hf', model_args='pretrained=BASE[,peft=ADAPTER]')"}
    if not check["passed"]:
        check["reason"] = f"general_lm_eval: a task fell by {-worst:.3g} accuracy (margin {margin})"
    return check


# --- the decision -----------------------------------------------------------------------------------------------

DECISION_RULE = ("pass iff every check whose role is 'required' passed (config 'roles'; advisory checks are "
                 "reported and their failures listed as warnings)")


def baseline_check(production_eval_sha256: str, eval_sha256: str, rebaseline: bool) -> dict:
    """Results on another eval set than production's are not comparable: passes only on the same set or when the
    operator re-baselines explicitly."""
    same = production_eval_sha256 == eval_sha256
    check = {"passed": same or bool(rebaseline), "status": "ok", "statistic": "eval set is production's",
             "base": production_eval_sha256, "adapter": eval_sha256, "diff": None, "interval": None, "n": None,
             "threshold": {"same_eval_set_or_rebaseline": True}, "method": "sha256 of the eval set's files"}
    if same:
        return check
    if rebaseline:
        check["note"] = (f"re-baselined: the production adapter was gated on eval set "
                         f"{production_eval_sha256[:12]}, this gate uses {eval_sha256[:12]}")
    else:
        check["reason"] = (f"EVAL_SET_CHANGED: the production adapter was gated on eval set "
                           f"{production_eval_sha256[:12]}, this gate uses {eval_sha256[:12]}; results are not "
                           "comparable: re-run with --rebaseline to accept the new eval set")
    return check


def decide(checks: dict[str, dict], roles: dict[str, str]) -> tuple[str, list[str], list[str]]:
    """Give every check its role; (decision, reasons of failed required checks, warnings of failed advisory ones).

    The decision is `all(passed)` over the required checks, and nothing else: a failed required check without a
    reason still fails the gate (its name stands in as the reason).
    """
    reasons, advisory = [], []
    for name, c in checks.items():
        c["role"] = roles.get(name, "required")
        if not c["passed"]:
            why = c.get("reason") or f"{name}: failed"
            (reasons if c["role"] == "required" else advisory).append(why)
    required = [c for c in checks.values() if c["role"] == "required"]
    if not required:
        reasons.append("no required checks enabled")
    decision = "pass" if required and all(c["passed"] for c in required) else "fail"
    return decision, reasons, [f"advisory check failed: {w}" for w in advisory]


# --- the gate ---------------------------------------------------------------------------------------------------


def run_gate(adapter: str | os.PathLike, eval_set: str | os.PathLike, out: str | os.PathLike,
             base: str | None = None, config: str | os.PathLike | dict | None = None, *,
             production_eval_sha256: str | None = None, rebaseline: bool = False,
             show_progress: bool = True) -> dict:
    """Gate `adapter` against its base on `eval_set`; write the report folder `out`; return the report.

    Raises GateConfigError (exit 2) for unusable inputs, GateEvaluationError (exit 3) when scoring fails.
    `production_eval_sha256`: the eval set the current production adapter was gated on; a different one fails
    the gate unless `rebaseline` is set (the registry enforces the promotion side).
    """
    cfg = load_config(config)
    adapter = Path(adapter).resolve()
    lineage, adapter_files = read_adapter(adapter)
    base_path, base_sha = resolve_base(base, lineage, adapter)
    try:
        es = load_eval_set(eval_set)
        general_path = cfg["checks"]["general"]["path"]
        if general_path:
            es["general_items"] = general_texts(general_path)
            es["general_sha256"] = sha256_json([g["text"] for g in es["general_items"]])
        else:
            es["general_items"] = es["general"]
            es["general_sha256"] = es["files"]["general.jsonl"]
    except EvalSetError as exc:
        raise GateConfigError(str(exc)) from exc
    overlap = check_overlap(es, lineage, cfg)
    gen = cfg["checks"]["generation"]
    if gen["enabled"] and gen["max_new_tokens"] == "auto":
        gen["max_new_tokens"] = auto_max_new_tokens(base_path, es["answers"][: gen["max_prompts"]])
    probes = cfg["checks"]["guardrails"]["probes"] if cfg["checks"]["guardrails"]["enabled"] else []
    started = dt.datetime.now(dt.timezone.utc)
    try:
        base_side, adapter_side, facts = score(adapter, base_path, base_sha, es, cfg, probes, show_progress)
    except GateConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure while scoring is an evaluation error, exit 3
        raise GateEvaluationError(f"scoring failed: {type(exc).__name__}: {exc}") from exc
    checks, items = checks_mod.evaluate(es, base_side, adapter_side, cfg, probes)
    if cfg["checks"]["general"]["enabled"] and cfg["checks"]["general"]["lm_eval"]:
        checks["general_lm_eval"] = _lm_eval(adapter, base_path, cfg["checks"]["general"]["lm_eval"])

    baseline = {"production_eval_sha256": production_eval_sha256, "rebaseline": bool(rebaseline),
                "same_eval_set": production_eval_sha256 in (None, es["sha256"])}
    if production_eval_sha256 is not None:
        checks["baseline_eval_set"] = baseline_check(production_eval_sha256, es["sha256"], rebaseline)
        if rebaseline and not baseline["same_eval_set"]:
            baseline["note"] = checks["baseline_eval_set"]["note"]
    warnings = [w for w in [general_set_warning(checks.get("general_nll"), facts.get("vocab_size"))] if w]
    decision, reasons, advisory = decide(checks, cfg["roles"])
    warnings += advisory
    lineage = lineage or {}
    report = {
        "kind": GATE_REPORT_KIND,
        "format_version": 1,
        "decision": decision,
        "decision_rule": DECISION_RULE,
        "reasons": reasons,
        "warnings": warnings,
        "checks": checks,
        "adapter": {"path": str(adapter), "files": adapter_files,
                    "adapter_sha256": sha256_json({n: adapter_files[n] for n in ADAPTER_FILES}),
                    "stage": lineage.get("stage"), "lineage_adapter_sha256": lineage.get("adapter_sha256")},
        "base": {"path": base_path, "weights_sha256": base_sha},
        "eval_set": {"path": es["path"], "sha256": es["sha256"], "version": es["version"],
                     "created": es.get("created"), "counts": es.get("counts"),
                     "general_sha256": es["general_sha256"]},
        "baseline": baseline,
        "overlap": overlap,
        "training_run": lineage.get("tracker"),
        "scoring": facts,
        "config": cfg,
        "versions": _versions(),
        "seed": cfg["seed"],
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    from eval import report as report_mod
    from eval import tracking

    report["tracker"] = tracking.log_gate(report, cfg, Path(out))
    with atomic_dir(out) as tmp:
        report_mod.write_reports(report, items, tmp)
    return report
