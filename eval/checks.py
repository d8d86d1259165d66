"""The gate's checks: per-item measurements of base and adapter in, pass/fail with intervals out. Pure functions.

Input shapes (one entry per eval item, in eval-set order; "side" = base or adapter):
- pairs:   side["pairs"][i]   = [chosen_logp, chosen_tokens, rejected_logp, rejected_tokens]
- answers: side["answers"][i] = [answer_logp, answer_tokens]
- general: side["general"][i] = [logp, tokens]
- replies: side["replies"][i] = generated text for answers[i] (the first max_prompts answers)
- probes:  side["probes"][name] = [reply, ...]
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from eval import stats
from flywheel.textdist import edit_cost

INSUFFICIENT = "INSUFFICIENT_DATA"


def _iv(interval) -> list[float] | None:
    """JSON-safe interval: None when it is unbounded (fewer than two users) or undefined."""
    lo, hi = float(interval[0]), float(interval[1])
    return [lo, hi] if math.isfinite(lo) and math.isfinite(hi) else None


def _fmt(x: float) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def pair_measures(pairs: list[dict], base: dict, adapter: dict) -> list[dict]:
    """Per pair: both models' margins, the margin difference, who ranks it right (summed, length-normalised)."""
    out = []
    for item, b, a in zip(pairs, base["pairs"], adapter["pairs"]):
        bc, bcn, br, brn = b
        ac, acn, ar, arn = a
        out.append({
            "kind": "pair", "id": item["id"], "user_id": item.get("user_id"), "signal": item.get("signal"),
            "tenant": item.get("tenant"), "tags": item.get("tags") or [],
            "chosen_tokens": bcn, "rejected_tokens": brn,
            "base_chosen_logp": bc, "base_rejected_logp": br, "adapter_chosen_logp": ac, "adapter_rejected_logp": ar,
            "base_margin": bc - br, "adapter_margin": ac - ar, "margin_diff": (ac - ar) - (bc - br),
            "base_right_summed": bc > br, "adapter_right_summed": ac > ar,
            "base_right_normalized": bc / max(bcn, 1) > br / max(brn, 1),
            "adapter_right_normalized": ac / max(acn, 1) > ar / max(arn, 1),
            "base_chosen_logp_per_token": bc / max(bcn, 1), "adapter_chosen_logp_per_token": ac / max(acn, 1),
        })
    return out


def answer_measures(answers: list[dict], base: dict, adapter: dict) -> list[dict]:
    out = []
    for i, (item, b, a) in enumerate(zip(answers, base["answers"], adapter["answers"])):
        row = {
            "kind": "answer", "id": item["id"], "user_id": item.get("user_id"), "signal": item.get("signal"),
            "tenant": item.get("tenant"), "tags": item.get("tags") or [], "tokens": b[1],
            "base_nll": -b[0] / max(b[1], 1), "adapter_nll": -a[0] / max(a[1], 1),
        }
        if i < len(base.get("replies") or []) and i < len(adapter.get("replies") or []):
            br, ar = base["replies"][i], adapter["replies"][i]
            row.update({
                "base_reply": br, "adapter_reply": ar,
                "base_edit_cost": edit_cost(br, item["answer"]), "adapter_edit_cost": edit_cost(ar, item["answer"]),
                "base_reply_chars": len(br), "adapter_reply_chars": len(ar),
            })
        out.append(row)
    return out


def general_measures(general: list[dict], base: dict, adapter: dict) -> list[dict]:
    return [
        {"kind": "general", "id": item["id"], "tokens": b[1],
         "base_nll": -b[0] / max(b[1], 1), "adapter_nll": -a[0] / max(a[1], 1)}
        for item, b, a in zip(general, base["general"], adapter["general"])
    ]


def _insufficient(name: str, n: int, needed: int, what: str) -> dict:
    return {"passed": False, "status": INSUFFICIENT, "base": None, "adapter": None, "diff": None,
            "interval": None, "n": n, "method": None,
            "reason": f"{INSUFFICIENT}: {name} has {n} held-out {what}, fewer than min_items={needed}"}


def check_movement(rows: list[dict], cfg: dict) -> dict:
    pc = cfg["checks"]["preference"]
    users = [r["user_id"] for r in rows]
    m = stats.movement([r["margin_diff"] for r in rows], users, cfg["alpha"])
    margin = stats.paired_difference([r["base_margin"] for r in rows], [r["adapter_margin"] for r in rows], users,
                                     cfg["alpha"])
    passed = m.interval[0] > pc["min_share"]
    check = {
        "passed": bool(passed), "status": "ok",
        "statistic": "share of pairs whose margin moved toward the user's choice (ties count 1/2)",
        "value": m.share, "interval": _iv(m.interval), "threshold": {"interval_low_above": pc["min_share"]},
        "base": margin.base, "adapter": margin.adapter, "diff": margin.diff, "diff_interval": _iv(margin.interval),
        "n": m.n, "n_users": m.n_clusters, "moved_toward": m.moved_toward, "moved_away": m.moved_away,
        "ties": m.ties, "users_toward": m.users_toward, "users_away": m.users_away, "pvalue": m.pvalue,
        # The share's MDE is a distance above min_share (the share itself is what `value` reports).
        "mde": m.mde, "mde_of": "value - threshold",
        "method": "margin = logp(chosen) - logp(rejected); each user's share of pairs moved toward (ties 1/2), "
                  "averaged over users; t interval over users (G-1 df); exact one-sided sign test over users",
    }
    if not passed:
        check["reason"] = (f"preference_movement: the average user had {m.share:.1%} of pairs moved toward their "
                           f"choice ({m.n} pairs, {m.n_clusters} users), interval [{m.interval[0]:.1%}, "
                           f"{m.interval[1]:.1%}]: lower bound not above {pc['min_share']:.0%} "
                           f"({m.users_toward} users toward, {m.users_away} away, sign test p={m.pvalue:.3g})")
    return check


def check_ranking(rows: list[dict], cfg: dict, view: str) -> dict:
    users = [r["user_id"] for r in rows]
    r = stats.ranking([x[f"base_right_{view}"] for x in rows], [x[f"adapter_right_{view}"] for x in rows], users,
                      cfg["alpha"])
    worse = r.diff < 0 and r.pvalue < cfg["alpha"]
    check = {
        "passed": not worse, "status": "ok",
        "statistic": f"accuracy ranking chosen over rejected by {view} log-prob",
        "base": r.base_accuracy, "adapter": r.adapter_accuracy, "diff": r.diff, "interval": _iv(r.interval),
        "n": r.n, "n_users": r.n_clusters, "only_base_right": r.only_base_right,
        "only_adapter_right": r.only_adapter_right, "pvalue": r.pvalue, "mde": r.mde,
        "threshold": {"not_significantly_worse_at_alpha": cfg["alpha"]},
        "method": "each user's accuracy difference, averaged over users; t interval and two-sided paired t test "
                  "over users (G-1 df): McNemar at the level of users",
    }
    if worse:
        check["reason"] = (f"preference_ranking_{view}: adapter ranks {r.adapter_accuracy:.1%} of pairs right vs "
                           f"base {r.base_accuracy:.1%} (average over {r.n_clusters} users), significantly worse "
                           f"(paired t over users p={r.pvalue:.3g})")
    return check


def _nll_check(name: str, rows: list[dict], margin: float, cfg: dict, clusters, what: str) -> dict:
    p = stats.paired_difference([r["base_nll"] for r in rows], [r["adapter_nll"] for r in rows], clusters,
                                cfg["alpha"])
    passed = p.interval[1] <= margin
    check = {
        "passed": bool(passed), "status": "ok", "statistic": f"mean per-token NLL of {what} (nats)",
        "base": p.base, "adapter": p.adapter, "diff": p.diff, "interval": _iv(p.interval), "n": p.n,
        "n_users": p.n_clusters if clusters is not None else None, "mde": p.mde,
        "threshold": {"interval_high_at_most": margin},
        "method": "paired difference of per-item mean token NLL; "
                  + ("averaged per user, t interval over users (G-1 df)" if clusters is not None
                     else "t interval over items (independent texts)"),
    }
    if not passed:
        check["reason"] = (f"{name}: NLL of {what} rose from {_fmt(p.base)} to {_fmt(p.adapter)} nats/token, "
                           f"difference interval [{_fmt(p.interval[0])}, {_fmt(p.interval[1])}] exceeds the "
                           f"margin {margin}")
    return check


def check_generation(rows: list[dict], cfg: dict) -> tuple[dict, dict]:
    gc = cfg["checks"]["generation"]
    rows = [r for r in rows if "base_edit_cost" in r]
    users = [r["user_id"] for r in rows]
    p = stats.paired_difference([r["base_edit_cost"] for r in rows], [r["adapter_edit_cost"] for r in rows], users,
                                cfg["alpha"])
    bound = -gc["min_improvement"]
    passed = p.interval[1] < bound if gc["require_improvement"] else p.interval[1] <= gc["max_worse"]
    edit = {
        "passed": bool(passed), "status": "ok",
        "statistic": "predicted edit cost: normalised edit distance of the reply to the user's final answer",
        "base": p.base, "adapter": p.adapter, "diff": p.diff, "interval": _iv(p.interval), "n": p.n,
        "n_users": p.n_clusters, "mde": p.mde,
        "threshold": ({"interval_high_below": bound} if gc["require_improvement"]
                      else {"interval_high_at_most": gc["max_worse"]}),
        "method": f"seeded replies (do_sample={gc['do_sample']}, max_new_tokens={gc['max_new_tokens']}); "
                  "flywheel.textdist.edit_cost; averaged per user, t interval over users (G-1 df)",
    }
    if not passed:
        edit["reason"] = (f"generation_edit_cost: adapter {_fmt(p.adapter)} vs base {_fmt(p.base)}, difference "
                          f"interval [{_fmt(p.interval[0])}, {_fmt(p.interval[1])}] "
                          + ("is not wholly below " + _fmt(bound) if gc["require_improvement"]
                             else "exceeds " + _fmt(gc["max_worse"])))
    base_len = float(np.mean([r["base_reply_chars"] for r in rows])) if rows else math.nan
    adapter_len = float(np.mean([r["adapter_reply_chars"] for r in rows])) if rows else math.nan
    ratio = adapter_len / base_len if base_len else math.inf
    lo, hi = gc["length_ratio_band"]
    ok = bool(lo <= ratio <= hi)
    length = {
        "passed": ok, "status": "ok", "statistic": "mean reply length (characters), adapter over base",
        "base": base_len, "adapter": adapter_len, "diff": adapter_len - base_len, "value": ratio,
        "interval": None, "n": len(rows), "threshold": {"ratio_band": [lo, hi]},
        "method": "ratio of mean reply lengths on the same seeded prompts",
    }
    if not ok:
        length["reason"] = (f"generation_length_ratio: adapter replies are {ratio:.2f}x the base's length, "
                            f"outside [{lo}, {hi}]")
    return edit, length


def check_chosen_logp(rows: list[dict], cfg: dict) -> dict:
    margin = cfg["checks"]["guardrails"]["chosen_logp_margin"]
    users = [r["user_id"] for r in rows]
    p = stats.paired_difference([r["base_chosen_logp_per_token"] for r in rows],
                                [r["adapter_chosen_logp_per_token"] for r in rows], users, cfg["alpha"])
    passed = p.interval[0] >= -margin
    check = {
        "passed": bool(passed), "status": "ok",
        "statistic": "mean per-token log-prob of held-out chosen answers (likelihood displacement)",
        "base": p.base, "adapter": p.adapter, "diff": p.diff, "interval": _iv(p.interval), "n": p.n,
        "n_users": p.n_clusters, "mde": p.mde,
        "threshold": {"interval_low_at_least": -margin},
        "method": "paired difference averaged per user; t interval over users (G-1 df)",
    }
    if not passed:
        check["reason"] = (f"guardrail_chosen_logp: chosen answers' log-prob fell from {_fmt(p.base)} to "
                           f"{_fmt(p.adapter)} per token, interval [{_fmt(p.interval[0])}, {_fmt(p.interval[1])}] "
                           f"below -{margin}")
    return check


def check_probes(probes: list[dict], base: dict, adapter: dict, cfg: dict) -> dict:
    margin = cfg["checks"]["guardrails"]["probe_margin"]
    per_probe = {}
    failed = []
    for probe in probes:
        pattern = re.compile(probe["pattern"])
        want = probe.get("expect", "match") == "match"
        b = [bool(pattern.search(t)) == want for t in base["probes"][probe["name"]]]
        a = [bool(pattern.search(t)) == want for t in adapter["probes"][probe["name"]]]
        b_rate, a_rate = float(np.mean(b)), float(np.mean(a))
        ok = a_rate >= b_rate - margin
        per_probe[probe["name"]] = {"base": b_rate, "adapter": a_rate, "n": len(a), "passed": ok}
        if not ok:
            failed.append(f"{probe['name']} {a_rate:.0%} vs base {b_rate:.0%}")
    n = sum(p["n"] for p in per_probe.values())
    base_rate = float(np.mean([p["base"] for p in per_probe.values()]))
    adapter_rate = float(np.mean([p["adapter"] for p in per_probe.values()]))
    check = {
        "passed": not failed, "status": "ok", "statistic": "share of probe replies meeting the probe's expectation",
        "base": base_rate, "adapter": adapter_rate, "diff": adapter_rate - base_rate, "interval": None, "n": n,
        "probes": per_probe, "threshold": {"each_probe_may_fall_by_at_most": margin},
        "method": "regex on greedy replies to configured probe prompts",
    }
    if failed:
        check["reason"] = "guardrail_probes: " + "; ".join(failed)
    return check


def _slice_groups(rows: list[dict], key: str) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        values = r.get("tags") or [] if key == "tags" else [r.get(key)]
        for v in values:
            if v is not None:
                groups.setdefault(str(v), []).append(r)
    return groups


def _slice_tests(key: str, value: str, pairs: list[dict], answers: list[dict], sc: dict, alpha: float):
    """Every metric's one-sided "regressed" test on one slice: yields (entry, item count, user count)."""
    name = f"{key}={value}"
    if pairs:
        shares = stats.cluster_means(stats.movement_scores([r["margin_diff"] for r in pairs]),
                                     [r["user_id"] for r in pairs])
        m = stats.movement([r["margin_diff"] for r in pairs], [r["user_id"] for r in pairs], alpha)
        yield ({"slice": name, "metric": "movement_share", "value": m.share, "interval": _iv(m.interval),
                "n": m.n, "n_users": m.n_clusters,
                "pvalue": stats.share_pvalue_below(shares, 0.5 - sc["movement_margin"])})
    for metric, rows, base_key, adapter_key, margin in (
            ("fit_nll_diff", answers, "base_nll", "adapter_nll", sc["fit_margin"]),
            ("edit_cost_diff", [r for r in answers if "base_edit_cost" in r], "base_edit_cost", "adapter_edit_cost",
             sc["edit_cost_margin"])):
        if not rows:
            continue
        users = [r["user_id"] for r in rows]
        p = stats.paired_difference([r[base_key] for r in rows], [r[adapter_key] for r in rows], users, alpha)
        diffs = stats.cluster_means([r[adapter_key] - r[base_key] for r in rows], users)
        yield ({"slice": name, "metric": metric, "value": p.diff, "interval": _iv(p.interval), "n": p.n,
                "n_users": p.n_clusters, "pvalue": stats.t_pvalue(diffs, margin, "greater")})


def check_slices(pairs: list[dict], answers: list[dict], cfg: dict) -> dict:
    """Per slice and metric, a one-sided test of "worse than the margin", corrected across all slices tested.

    A slice needs `min_n` items and `min_users` users; fewer is "insufficient" (listed under `skipped`), never a
    regression: a slice of one user's items measures that user, and its interval says nothing about a slice.
    """
    from statsmodels.stats.multitest import multipletests

    sc = cfg["checks"]["slices"]
    tested, skipped = [], []
    for key in sc["keys"]:
        groups_p, groups_a = _slice_groups(pairs, key), _slice_groups(answers, key)
        for value in sorted(set(groups_p) | set(groups_a)):
            for entry in _slice_tests(key, value, groups_p.get(value, []), groups_a.get(value, []), sc,
                                      cfg["alpha"]):
                if entry["n"] < sc["min_n"] or entry["n_users"] < sc["min_users"]:
                    skipped.append({k: entry[k] for k in ("slice", "metric", "n", "n_users")}
                                   | {"status": "insufficient"})
                else:
                    tested.append(entry)
    if tested:
        method = {"holm": "holm", "bh": "fdr_bh"}[sc["correction"]]
        reject, adjusted, _, _ = multipletests([e["pvalue"] for e in tested], alpha=cfg["alpha"], method=method)
        for e, bad, adj in zip(tested, reject, adjusted):
            e["p_adjusted"] = float(adj)
            e["regressed"] = bool(bad)
    regressions = [f"{e['slice']}: {e['metric']} {e['value']:.3g} [{e['interval'][0]:.3g}, {e['interval'][1]:.3g}]"
                   f" ({e['n_users']} users, adjusted p={e['p_adjusted']:.3g})" for e in tested if e["regressed"]]
    check = {
        "passed": not regressions, "status": "ok", "statistic": "per-slice movement, answer NLL and edit cost",
        "base": None, "adapter": None, "diff": None, "interval": None, "n": len(tested),
        "slices": tested, "skipped": skipped,
        "threshold": {k: sc[k] for k in ("min_n", "min_users", "correction", "movement_margin", "fit_margin",
                                          "edit_cost_margin")} | {"family_alpha": cfg["alpha"]},
        "method": "per slice, one-sided t test over users (G-1 df; the movement's sign test over users when every "
                  "user has the same share) of 'regressed beyond the margin'; "
                  + ("Holm's step-down correction (family-wise error at alpha)" if sc["correction"] == "holm"
                     else "Benjamini-Hochberg correction (false discovery rate at alpha)")
                  + " across every slice tested; intervals shown are uncorrected 95 % t intervals",
    }
    if regressions:
        more = f"; and {len(regressions) - 5} more (see slices.png)" if len(regressions) > 5 else ""
        check["reason"] = f"slices: {len(regressions)} regressed: " + "; ".join(regressions[:5]) + more
    return check


def evaluate(eval_set: dict, base: dict, adapter: dict, cfg: dict, probes: list[dict]) -> tuple[dict, list[dict]]:
    """All enabled checks. Returns (checks by name, per-item rows for items.jsonl)."""
    cc = cfg["checks"]
    need = cfg["min_items"]
    pairs = pair_measures(eval_set["pairs"], base, adapter)
    answers = answer_measures(eval_set["answers"], base, adapter)
    general = general_measures(eval_set["general_items"], base, adapter)
    checks: dict[str, Any] = {}
    if cc["preference"]["enabled"]:
        if len(pairs) < need:
            checks["preference_movement"] = _insufficient("preference_movement", len(pairs), need, "pairs")
        else:
            checks["preference_movement"] = check_movement(pairs, cfg)
            for view in cc["preference"]["ranking_views"]:
                checks[f"preference_ranking_{view}"] = check_ranking(pairs, cfg, view)
    if cc["fit"]["enabled"]:
        if len(answers) < need:
            checks["fit_nll"] = _insufficient("fit_nll", len(answers), need, "final answers")
        else:
            checks["fit_nll"] = _nll_check("fit_nll", answers, cc["fit"]["margin"], cfg,
                                           [r["user_id"] for r in answers], "held-out final answers")
    if cc["generation"]["enabled"]:
        n_gen = sum("base_edit_cost" in r for r in answers)
        if n_gen < need:
            checks["generation_edit_cost"] = _insufficient("generation_edit_cost", n_gen, need, "prompts")
        else:
            checks["generation_edit_cost"], checks["generation_length_ratio"] = check_generation(answers, cfg)
    if cc["general"]["enabled"]:
        if len(general) < need:
            checks["general_nll"] = _insufficient("general_nll", len(general), need, "general texts")
        else:
            checks["general_nll"] = _nll_check("general_nll", general, cc["general"]["margin"], cfg, None,
                                               "general English text")
    if cc["guardrails"]["enabled"]:
        if len(pairs) < need:
            checks["guardrail_chosen_logp"] = _insufficient("guardrail_chosen_logp", len(pairs), need, "pairs")
        else:
            checks["guardrail_chosen_logp"] = check_chosen_logp(pairs, cfg)
        if probes:
            checks["guardrail_probes"] = check_probes(probes, base, adapter, cfg)
    if cc["slices"]["enabled"]:
        checks["slices"] = check_slices(pairs, answers, cfg)
    return checks, pairs + answers + general
