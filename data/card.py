"""The dataset card (README.md of a build dir): what was built, from what, and what was left out and why."""

from __future__ import annotations

REASONS = {
    "no_signal": "the event led to no example (e.g. a generation nobody reacted to)",
    "orphan": "feedback naming a generation/request that no input holds (see orphans.jsonl; rebuild with it)",
    "forgotten_user": "the user asked to be forgotten",
    "other_tenant": "event of another tenant than the one built",
    "inconsistent_request": "a request whose generations name different users or sessions (cannot be split)",
    "duplicate_generation_id": "a second generation event reusing a known generation_id",
    "superseded_edit": "an earlier edit of a generation edited again later (the latest counts)",
    "superseded_rating": "an earlier rating of a generation rated again later",
    "superseded_accept": "a repeated accept of one generation",
    "superseded_regenerate": "a repeated regenerate of one generation",
    "superseded_rephrase": "a repeated rephrase of one request",
    "superseded_abandon": "a repeated abandon of one request",
    "kind_not_built": "only a dataset kind this build was not asked for (config `kinds`) would use it",
    "kto_label_conflict": "the same output judged both desirable and undesirable",
    "empty_output": "an empty or whitespace-only output",
    "trivial_edit": "an edit changing only whitespace/case/punctuation or fewer than min_edit_chars characters",
    "identical_pair": "a regeneration pair whose two texts are the same",
    "prompt_too_long": "prompt longer than max_prompt_chars",
    "completion_too_long": "completion longer than max_completion_chars",
    "too_many_tokens": "prompt + completion longer than max_tokens",
    "preference_conflict": "the same prompt with A over B and B over A",
    "duplicate_example": "an exact copy of an earlier example",
    "near_duplicate_prompt": "a later turn with the same normalised prompt",
    "regeneration_cap": "beyond max_pairs_per_turn regeneration pairs of one turn",
    "split_time_cutoff": "on the wrong side of the time cutoff for its split",
    "prompt_in_test": "a training example whose prompt occurs in the test split",
    "blank_line": "an empty line",
    "oversized_line": "a line longer than max_line_bytes (not parsed)",
}


def dataset_card(m: dict) -> str:
    acc = m["accounting"]
    lines = [
        "# Flywheel dataset build",
        "",
        f"Built {m['created']} from {len(m['inputs'])} capture log file(s) (capture events v{m['schema_version']}).",
        "Load a kind with `datasets.load_from_disk(\"<this dir>/sft\")` (or `dpo`, `kto`); rows are in TRL's",
        "conversational form with metadata columns `signal, request_id, session_id, user_id, tenant, tags, ts,",
        "generation_id, model_base, model_adapter`.",
        "",
        "## Examples",
        "",
        "| kind | train | test |",
        "|---|---:|---:|",
    ]
    for kind, s in m["examples"].items():
        lines.append(f"| {kind} | {s['train']} | {s['test']} |")
    split = m["split"]
    lines += [
        "",
        f"Split by hashed {split['by']} (seed {split['seed']}, test fraction {split['test_fraction']}"
        + (f", time cutoff {split['time_cutoff']}" if split["time_cutoff"] is not None else "") + ").",
        "",
        "## Every input line",
        "",
        "| read | used | dropped | duplicate | quarantined |",
        "|---:|---:|---:|---:|---:|",
        f"| {acc['read']} | {acc['used']} | {acc['dropped']} | {acc['duplicate']} | {acc['quarantined']} |",
        "",
        "## Events by type",
        "",
        "| type | events |",
        "|---|---:|",
    ]
    lines += [f"| {t} | {n} |" for t, n in m["events"].items()]
    lines += ["", "## Dropped, by reason", "", "| reason | lines | meaning |", "|---|---:|---|"]
    lines += [f"| {r} | {n} | {REASONS.get(r, '')} |" for r, n in m["drops"].items()]
    ex = m.get("example_drops") or {}
    reasons = [r for r in REASONS if any(r in d for d in ex.values())]
    if reasons:
        lines += ["", "## Examples removed by the filters", "",
                  "| reason | " + " | ".join(ex) + " |", "|---|" + "---:|" * len(ex)]
        lines += [f"| {r} | " + " | ".join(str(ex[k].get(r, 0)) for k in ex) + " |" for r in reasons]
    if m.get("redactions"):
        lines += ["", "## Redactions", "", "| kind | replaced |", "|---|---:|"]
        lines += [f"| {k} | {n} |" for k, n in m["redactions"].items()]
    lines += ["", "Quarantined lines (invalid input) are in `quarantine.jsonl` with file, line, field and reason.", ""]
    return "\n".join(lines)
