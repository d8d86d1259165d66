"""Training chat templates: the model's own template with `{% generation %}` markers, checked to render the same.

TRL's `assistant_only_loss` needs the markers to know which tokens are the assistant's. TRL ships marked copies of
some templates and swaps them in when the tokenizer's template matches one of them byte for byte (Qwen3's does; Llama
3.1's and SmolLM2's do not). For the others a recipe names a marked copy with `chat_template_path`, and this module
refuses to train with it unless it renders every probe conversation exactly as the model's own template does: the
markers must change which tokens carry the loss, never the text the model is trained on.
"""

from __future__ import annotations

from pathlib import Path

_SYSTEM = {"role": "system", "content": "You answer in two sentences."}
_TURNS = [
    {"role": "user", "content": "How do I reset my password?"},
    {"role": "assistant", "content": "Open Settings, then Security.\nChoose Reset password."},
    {"role": "user", "content": "  And if I no longer have the email?  "},
    {"role": "assistant", "content": "Contact support with your account number."},
]
# (messages, add_generation_prompt): one turn and several, with and without a system prompt, ending on the user's
# turn (inference) or the assistant's (training).
PROBES = [
    (_TURNS[:1], True), (_TURNS[:2], False), (_TURNS[:3], True), (_TURNS, False),
    ([_SYSTEM, *_TURNS[:1]], True), ([_SYSTEM, *_TURNS], False), ([_SYSTEM, *_TURNS[:3]], True),
]


class TemplateMismatch(ValueError):
    """A training template that renders some conversation differently from the model's own template."""


def rendering_differences(tokenizer, training_template: str, reference_template: str | None = None) -> list[str]:
    """The probes on which `training_template` and the model's own template (or `reference_template`) differ."""
    reference = reference_template if reference_template is not None else tokenizer.chat_template
    differences = []
    for messages, add_generation_prompt in PROBES:
        ours, theirs = (
            tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                          add_generation_prompt=add_generation_prompt)
            for template in (training_template, reference)
        )
        if ours != theirs:
            differences.append(f"{len(messages)} messages, add_generation_prompt={add_generation_prompt}: "
                               f"training renders {ours!r}, the model's own template {theirs!r}")
    return differences


def check_training_template(model_name_or_path: str, template_path: str | Path) -> None:
    """Raise TemplateMismatch when the template file does not render like the model's own chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
    if not tokenizer.chat_template:
        return  # nothing to agree with: the training template is the model's template
    training = Path(template_path).read_text(encoding="utf-8")
    differences = rendering_differences(tokenizer, training)
    if differences:
        raise TemplateMismatch(
            f"chat_template_path {template_path} does not render like the chat template of {model_name_or_path} "
            f"(is the recipe for another model?): {differences[0]}"
        )
