"""`langsmith`: runs in LangSmith's run data format (`id, trace_id, parent_run_id, run_type, inputs, outputs,
start_time, extra, tags, ...`, as `Client.list_runs` or a bulk export gives them) and feedback records
(`id, run_id, trace_id, key, score, value, comment, correction, feedback_source, created_at`).

Runs with `run_type` "llm" are the LLM calls; a trace without one becomes a generation from its root run. The
user and the conversation come from the run's `extra.metadata` (`user_id`; `thread_id`, `session_id` or
`conversation_id`, the keys LangSmith groups threads by); `session_id` at the top level is the tracing project,
not a conversation, and is not used.
"""

from __future__ import annotations

from data.importers.common import maybe_json, to_millis
from data.importers.traced import Feedback, Node

FORMAT = "langsmith"
_THREAD_KEYS = ("thread_id", "session_id", "conversation_id")


def read_langsmith(rec: dict) -> Node | Feedback | str:
    if not isinstance(rec.get("id"), str) or not rec["id"]:
        return "missing_id"
    if "key" in rec and "run_id" in rec:
        return _feedback(rec)
    if "run_type" not in rec:
        return "unrecognised_record"
    extra = maybe_json(rec.get("extra")) or {}
    extra = extra if isinstance(extra, dict) else {}
    meta, params = extra.get("metadata"), extra.get("invocation_params")
    meta, params = (meta if isinstance(meta, dict) else {}), (params if isinstance(params, dict) else {})
    model = meta.get("ls_model_name") or params.get("model") or params.get("model_name")
    session = next((meta[k] for k in _THREAD_KEYS if isinstance(meta.get(k), str) and meta[k]), None)
    user = meta.get("user_id")
    tags = maybe_json(rec.get("tags"))
    return Node(id=rec["id"], trace_id=rec.get("trace_id") or rec["id"],
                is_root=not rec.get("parent_run_id"), is_call=rec["run_type"] == "llm",
                ts=to_millis(rec.get("start_time")), name=rec.get("name"),
                user=user if isinstance(user, str) and user else None, session=session,
                tags=[t for t in tags if isinstance(t, str)] if isinstance(tags, list) else None,
                input=rec.get("inputs"), output=rec.get("outputs"), model=model if isinstance(model, str) else None)


def _feedback(rec: dict) -> Feedback | str:
    if not rec.get("run_id"):
        return "missing_run_id"
    correction = maybe_json(rec.get("correction"))
    value = rec.get("score") if rec.get("score") is not None else rec.get("value")
    return Feedback(id=rec["id"], target=rec["run_id"], trace_id=rec.get("trace_id"), name=str(rec.get("key")),
                    value=value, ts=to_millis(rec.get("created_at")), comment=rec.get("comment"),
                    correction=correction if correction not in (None, "", {}) else None)
