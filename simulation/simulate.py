"""Simulated users of a product: they bring requests, the model really answers, they accept, edit, regenerate, rate,
rephrase or abandon according to a latent preference, and their behaviour lands in a capture log (events v1).

Users act in lockstep rounds so that every round's replies are generated in one batch. Each user draws from its own
seeded random stream and the batch is sampled under a per-round torch seed, so the same seed writes the same log.

Beside the log, `<stem>.turns.jsonl` holds one ground-truth record per turn (outcome, regenerations, edit cost,
rules met): the simulator's own view, which the pipeline never reads.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flywheel.files import sha256_json, write_text_atomic
from flywheel.textdist import edit_cost
from simulation import corpus
from simulation.base_models import base_model_name
from simulation.preferences import (
    PopulationConfig,
    Preference,
    check,
    edit_toward,
    family,
    on_topic,
    on_topic_of_requests,
    sample_preference,
)

WEEK_MS = 7 * 24 * 3600 * 1000
REPHRASINGS = [
    "Let me put it another way. {req}",
    "That is not what I meant. {req}",
    "To be clear: {req}",
    "{req} Please try again.",
]


@dataclass
class SimConfig:
    """Behaviour rates and generation settings; every field can be set from `--config FILE` (YAML or JSON)."""

    # generation
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 96
    batch_size: int = 64
    # generate under torch.autocast(bfloat16) on the CPU: about twice the tokens/s of fp32 for a 135M-parameter
    # model on a CPU with AMX (docs/simulation.md); off by default, since the tiny model gains nothing from it
    autocast_bf16: bool = False
    # conversations
    max_turns_per_session: int = 3
    # behaviour: a reply missing no rule is accepted; missing at most `edit_max_misses` it is edited; missing more
    # it is regenerated, up to `max_regenerations` times, after which the user edits, rephrases or abandons.
    edit_max_misses: int = 2
    max_regenerations: int = 1
    p_rephrase_after_limit: float = 0.2
    p_abandon_after_limit: float = 0.2
    p_abandon: float = 0.02  # leaves at any turn whatever the reply
    p_rate: float = 0.25  # rates the reply it kept or edited (+1 if it met every rule, else -1)
    # a reply that answers another request (see preferences.on_topic) is never kept as it is: regenerated, and at
    # the limit abandoned, rephrased, or replaced by the user's own answer
    check_topic: bool = True
    topic_threshold: float = 0.3
    # what "on topic" is judged against: "reference", a base-style answer to the request (suits a model trained on
    # the corpus's own answers), or "request", the words of the user's own requests in the conversation (suits a
    # model that answers in its own free English; see preferences.on_topic_of_requests)
    topic_judge: str = "reference"
    # population (the same `population_seed` gives the same users, whatever the behaviour seed): a family of
    # preferences (simulation.preferences.FAMILIES: "house", the one everything was tuned on, or "plain"), and
    # optionally its personal-rule rates changed (None: the family's)
    population_seed: int = 0
    preferences: str = "house"
    p_bullets: float | None = None
    p_next_step: float | None = None
    p_length_band: float | None = None
    max_words_choices: tuple[int, ...] | None = None
    # timestamps: `start` (ISO 8601), default 2026-01-05T09:00Z plus one week per seed, so periods simulated with
    # consecutive seeds follow each other in time
    start: str | None = None
    tags: list[str] = field(default_factory=list)

    @classmethod
    def from_file(cls, path: str | os.PathLike | None, overrides: dict[str, Any] | None = None) -> "SimConfig":
        values: dict[str, Any] = {}
        if path is not None:
            text = Path(path).read_text()
            if str(path).endswith((".yaml", ".yml")):
                import yaml

                values = yaml.safe_load(text) or {}
            else:
                values = json.loads(text)
            if not isinstance(values, dict):
                raise ValueError(f"{path}: the simulation config must be a mapping of field: value")
        values.update(overrides or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path or 'config'}: unknown simulation setting(s) {unknown}; known: {sorted(known)}")
        if values.get("topic_judge", "reference") not in ("reference", "request"):
            raise ValueError(f"{path or 'config'}: topic_judge must be 'reference' or 'request', "
                             f"not {values['topic_judge']!r}")
        if "max_words_choices" in values:
            values["max_words_choices"] = tuple(values["max_words_choices"])
        return cls(**values)

    def population(self) -> PopulationConfig:
        own = {"p_bullets": self.p_bullets, "p_next_step": self.p_next_step, "p_length_band": self.p_length_band,
               "max_words_choices": self.max_words_choices}
        return dataclasses.replace(family(self.preferences).population,
                                   **{k: v for k, v in own.items() if v is not None})


def population(n_users: int, config: SimConfig) -> list[Preference]:
    """The users' latent preferences: a function of `population_seed` and the family only."""
    rng = random.Random(f"population:{config.population_seed}")
    pop = config.population()
    style = family(config.preferences).style
    return [sample_preference(rng, pop, style) for _ in range(n_users)]


def logs_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    """(capture log, per-turn sidecar): `period0.jsonl[.gz]` -> `period0.turns.jsonl`."""
    out = Path(out)
    name = out.name
    for suffix in (".gz", ".zst"):
        name = name.removesuffix(suffix)
    stem = name.removesuffix(".jsonl").removesuffix(".json")
    return out, out.with_name(stem + ".turns.jsonl")


# --- the model ----------------------------------------------------------------------------------------------------


class Generator:
    """The model (optionally with a LoRA adapter) answering batches of conversations."""

    def __init__(self, model: str | os.PathLike, adapter: str | os.PathLike | None, config: SimConfig):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.config = config
        self.tokenizer = AutoTokenizer.from_pretrained(str(model))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        lm = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
        if adapter is not None:
            from peft import PeftModel

            # Merged once for speed: generation then runs at the base model's cost.
            lm = PeftModel.from_pretrained(lm, str(adapter)).merge_and_unload()
        lm.eval()
        self.model = lm

    def __call__(self, conversations: list[list[dict]], seed: int) -> list[str]:
        prompts = [self.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
                   for m in conversations]
        replies: list[str] = []
        for start in range(0, len(prompts), self.config.batch_size):
            enc = self.tokenizer(prompts[start:start + self.config.batch_size], return_tensors="pt", padding=True,
                                 add_special_tokens=False)
            new_tokens = self._sample(enc["input_ids"], enc["attention_mask"], seed * 1009 + start)
            replies += [t.strip() for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
        return replies

    def _sample(self, input_ids, attention_mask, seed: int):
        """Temperature + top-p sampling with the KV cache, stopping when every row has ended its turn.

        A plain loop rather than `model.generate`: on a model this small, generate's per-step bookkeeping cost more
        than the forward pass (1.4x slower per token, measured on the default tiny model, batch 40).
        """
        torch = self.torch
        cfg = self.config
        gen = torch.Generator().manual_seed(seed)
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        position = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        steps = []
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.autocast_bf16)
        with torch.no_grad(), autocast:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position,
                             use_cache=True, logits_to_keep=1)
            for _ in range(cfg.max_new_tokens):
                probs = torch.softmax(out.logits[:, -1].float() / cfg.temperature, dim=-1)
                sorted_p, order = probs.sort(dim=-1, descending=True)
                outside = sorted_p.cumsum(-1) - sorted_p > cfg.top_p  # keep the smallest set reaching top_p
                sorted_p = sorted_p.masked_fill(outside, 0.0)
                pick = torch.multinomial(sorted_p, 1, generator=gen)
                token = order.gather(-1, pick).squeeze(-1)
                token = torch.where(done, torch.full_like(token, pad), token)
                steps.append(token)
                done |= token == eos
                if bool(done.all()):
                    break
                attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
                position = position[:, -1:] + 1
                out = self.model(input_ids=token[:, None], attention_mask=attention_mask, position_ids=position,
                                 cache=out.cache, use_cache=True)
        return torch.stack(steps, dim=1)


def model_tag(model: str | os.PathLike, adapter: str | os.PathLike | None, adapter_version: str | None) -> dict:
    """`{base, adapter}` for every generation event: the base's name and the adapter's version (or None)."""
    base = base_model_name(model)
    if adapter is None:
        return {"base": base, "adapter": None}
    if adapter_version is None:
        adapter = Path(adapter)
        entry = adapter.parent / "entry.json"  # a registry version folder: versions/<name>/{adapter,entry.json}
        if entry.exists():
            adapter_version = json.loads(entry.read_text()).get("name") or adapter.parent.name
        else:
            adapter_version = adapter.name
    return {"base": base, "adapter": adapter_version}


# --- the users ----------------------------------------------------------------------------------------------------


@dataclass
class UserState:
    index: int
    user_id: str
    pref: Preference
    rng: random.Random
    clock_ms: int
    turns_left: int
    session_id: str | None = None
    requests: list[str] = field(default_factory=list)  # the rest of the session's requests
    references: list[str] = field(default_factory=list)  # base-style answers to them: what "on topic" means
    reference: str = ""  # the pending request's
    domain: str = ""
    history: list[dict] = field(default_factory=list)  # the conversation so far (ends with the pending request)
    request_id: str | None = None
    n_regens: int = 0
    n_generations: int = 0


class Simulation:
    def __init__(self, generate, tag: dict, users: int, turns: int, seed: int, config: SimConfig):
        self.generate = generate
        self.tag = tag
        self.config = config
        self.seed = seed
        self.run_id = sha256_json({"seed": seed, "model": tag, "users": users, "turns": turns,
                                   "config": dataclasses.asdict(config)})[:10]
        self.events: list[dict] = []
        self.turn_records: list[dict] = []
        self.counters = {"event": 0, "generation": 0, "request": 0, "session": 0}
        start = (datetime.fromisoformat(config.start.replace("Z", "+00:00")) if config.start else
                 datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc))
        start_ms = int(start.timestamp() * 1000) + (0 if config.start else seed * WEEK_MS)
        prefs = population(users, config)
        self.users = [
            UserState(i, f"user-{i:04d}", prefs[i], random.Random(f"behaviour:{seed}:{i}"),
                      start_ms + i * 7_000, turns)
            for i in range(users)
        ]

    # ids are deterministic and unique per run, so logs of several periods can be built together
    def _id(self, kind: str) -> str:
        self.counters[kind] += 1
        return f"{self.run_id}-{kind[0]}{self.counters[kind]:06d}"

    def _emit(self, user: UserState, type_: str, **fields) -> dict:
        user.clock_ms += user.rng.randint(2_000, 40_000)
        event = {"event_id": self._id("event"), "type": type_, "ts": user.clock_ms,
                 "session_id": user.session_id, "user_id": user.user_id,
                 "tags": [f"domain:{user.domain}", *self.config.tags], **fields}
        self.events.append(event)
        return event

    def _start_session(self, user: UserState) -> None:
        conv = corpus.sample_conversation(user.rng, max_turns=self.config.max_turns_per_session)
        user.session_id = self._id("session")
        user.domain = conv.domain
        user.requests = [t.request for t in conv.turns]
        user.references = [t.reply for t in conv.turns]
        user.history = []
        user.clock_ms += user.rng.randint(60_000, 3_600_000)

    def _next_request(self, user: UserState, text: str | None = None) -> None:
        if text is None:  # else a rephrasing of the same request: same reference
            text = user.requests.pop(0)
            user.reference = user.references.pop(0)
        user.history = user.history + [{"role": "user", "content": text}]
        user.request_id = self._id("request")
        user.n_regens = 0

    def _wants_generation(self, user: UserState) -> bool:
        """Move the user to its next pending request; False when it has used up its turns."""
        if user.request_id is not None:
            return True
        if user.turns_left <= 0:
            return False
        if not user.requests:
            self._start_session(user)
        self._next_request(user)
        return True

    def _end_turn(self, user: UserState, outcome: str, output: str, final: str | None, met: dict,
                  relevant: bool = True) -> None:
        self.turn_records.append({
            "request_id": user.request_id, "user_id": user.user_id, "session_id": user.session_id,
            "model": self.tag, "outcome": outcome, "n_regenerations": user.n_regens,
            "edit_cost": edit_cost(output, final),
            "rules_met": sum(met.values()), "rules_total": len(met), "on_topic": relevant,
            "final_rules_met": sum(check(user.pref, final).values()) if final is not None else None,
            "domain": user.domain,
        })
        user.turns_left -= 1
        user.request_id = None

    def _on_topic(self, user: UserState, output: str) -> bool:
        if self.config.topic_judge == "request":
            return on_topic_of_requests(output, [m["content"] for m in user.history if m["role"] == "user"])
        return on_topic(output, user.reference, self.config.topic_threshold)

    def _react(self, user: UserState, output: str) -> None:
        """One generation shown to the user, and what the user does with it."""
        cfg = self.config
        gen_id = self._id("generation")
        self._emit(user, "generation", generation_id=gen_id, request_id=user.request_id,
                   messages=[dict(m) for m in user.history], output=output, model=dict(self.tag),
                   params={"temperature": cfg.temperature, "top_p": cfg.top_p, "max_new_tokens": cfg.max_new_tokens})
        met = check(user.pref, output)
        misses = sum(not ok for ok in met.values())
        relevant = self._on_topic(user, output) if cfg.check_topic else True
        rng = user.rng
        # Draw every choice up front so one rate does not shift another's random stream.
        u_abandon, u_after, u_rate = rng.random(), rng.random(), rng.random()

        if u_abandon < cfg.p_abandon:
            self._emit(user, "abandon", request_id=user.request_id)
            self._end_turn(user, "abandon", output, None, met, relevant)
            user.requests = []  # the session ends
            return
        if misses > cfg.edit_max_misses or not relevant:
            if user.n_regens < cfg.max_regenerations:
                self._emit(user, "regenerate", generation_id=gen_id)
                user.n_regens += 1
                return
            rephrase = cfg.p_abandon_after_limit <= u_after < cfg.p_abandon_after_limit + cfg.p_rephrase_after_limit
            if rephrase and user.turns_left > 1:  # the rephrased request is a new turn: it needs budget left
                old_request, old_text = user.request_id, user.history[-1]["content"]
                self._end_turn(user, "rephrase", output, None, met, relevant)
                user.history = user.history[:-1]
                self._next_request(user, rng.choice(REPHRASINGS).format(req=old_text))
                self._emit(user, "rephrase", request_id=old_request, new_request_id=user.request_id)
                return
            if u_after < cfg.p_abandon_after_limit + cfg.p_rephrase_after_limit:
                self._emit(user, "abandon", request_id=user.request_id)
                self._end_turn(user, "abandon", output, None, met, relevant)
                user.requests = []
                return
        final = output
        outcome = "accept"
        if not relevant:  # nothing to keep: the user writes the answer it wanted, the way it likes it
            final = edit_toward(user.pref, user.reference)
            outcome = "edit"
            self._emit(user, "edit", generation_id=gen_id, edited_output=final)
        elif misses:
            final = edit_toward(user.pref, output)
            outcome = "edit"
            self._emit(user, "edit", generation_id=gen_id, edited_output=final)
        self._emit(user, "accept", generation_id=gen_id)
        if u_rate < cfg.p_rate:
            self._emit(user, "rating", generation_id=gen_id, value=1 if misses == 0 and relevant else -1)
        self._end_turn(user, outcome, output, final, met, relevant)
        user.history = user.history + [{"role": "assistant", "content": final}]
        if not user.requests:
            user.session_id = None

    def run(self, progress=None) -> None:
        round_no = 0
        while True:
            active = [u for u in self.users if self._wants_generation(u)]
            if not active:
                break
            replies = self.generate([u.history for u in active], seed=self.seed * 100_003 + round_no)
            for user, reply in zip(active, replies):
                self._react(user, reply)
            round_no += 1
            if progress is not None:
                progress(len(self.turn_records))


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows)
    if path.name.endswith(".gz"):
        import io

        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:  # mtime=0: same seed, same bytes
            f.write(text.encode())
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)
    elif path.name.endswith(".zst"):
        import zstandard

        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
        os.replace(tmp, path)
    else:
        write_text_atomic(path, text)


def summarise(turn_records: list[dict], events: list[dict]) -> dict[str, Any]:
    n = len(turn_records) or 1
    outcomes: dict[str, int] = {}
    for r in turn_records:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    types: dict[str, int] = {}
    for e in events:
        types[e["type"]] = types.get(e["type"], 0) + 1
    return {
        "turns": len(turn_records),
        "generations": types.get("generation", 0),
        "events": types,
        "outcomes": outcomes,
        "edit_cost": sum(r["edit_cost"] for r in turn_records) / n,
        "accept_rate": outcomes.get("accept", 0) / n,
        "edit_rate": outcomes.get("edit", 0) / n,
        "regen_rate": sum(r["n_regenerations"] for r in turn_records) / n,
        "abandon_rate": outcomes.get("abandon", 0) / n,
        "rephrase_rate": outcomes.get("rephrase", 0) / n,
        "rules_met_fraction": (sum(r["rules_met"] for r in turn_records)
                               / max(1, sum(r["rules_total"] for r in turn_records))),
    }


def simulate(model: str | os.PathLike, out: str | os.PathLike, adapter: str | os.PathLike | None = None,
             users: int = 40, turns: int = 15, seed: int = 0, config: SimConfig | str | os.PathLike | None = None,
             adapter_version: str | None = None, show_progress: bool = False, generate=None,
             preferences: str | None = None) -> dict[str, Any]:
    """Simulate `users` users doing `turns` turns each against `model` (+ `adapter`); write the log and sidecar.

    Returns a summary: turns, generations, event counts, outcomes, mean edit cost and rates, timings, paths.
    `generate` replaces the model with any `f(conversations, seed) -> replies` (for tests of the users alone).
    `preferences` names the users' preference family (simulation.preferences.FAMILIES), over the config's.
    """
    if not isinstance(config, SimConfig):
        config = SimConfig.from_file(config)
    if preferences is not None:
        config = dataclasses.replace(config, preferences=preferences)
    family(config.preferences)  # an unknown family is an error before any model is loaded
    if users < 1 or turns < 1:
        raise ValueError(f"users and turns must be at least 1 (got users={users}, turns={turns})")
    log_path, turns_path = logs_paths(out)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tag = model_tag(model, adapter, adapter_version)
    if generate is None:
        generate = Generator(model, adapter, config)
    t_load = time.perf_counter() - t0
    sim = Simulation(generate, tag, users, turns, seed, config)

    bar = None
    if show_progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("[bold]simulating users[/]"), BarColumn(), TextColumn("{task.completed}/{task.total} turns"),
                       TimeElapsedColumn(), transient=True)
        task = bar.add_task("simulate", total=users * turns)
        bar.start()
    try:
        sim.run(progress=(lambda n: bar.update(task, completed=n)) if bar else None)
    finally:
        if bar is not None:
            bar.stop()
    _write_jsonl(log_path, sim.events)
    _write_jsonl(turns_path, sim.turn_records)
    seconds = time.perf_counter() - t0
    summary = summarise(sim.turn_records, sim.events)
    summary.update({
        "model": tag, "users": users, "seed": seed, "log": str(log_path), "turns_log": str(turns_path),
        "seconds": round(seconds, 2), "load_seconds": round(t_load, 2),
        "turns_per_second": round(summary["turns"] / max(seconds - t_load, 1e-9), 2),
        "config": dataclasses.asdict(config),
    })
    return summary
