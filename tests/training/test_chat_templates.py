"""Training chat templates: `{% generation %}` markers that change which tokens carry the loss, never the text."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.chat_templates import PROBES, rendering_differences
from training.config import RecipeError, parse_recipe

REPO = Path(__file__).resolve().parents[2]
SMOLLM2_RECIPES = REPO / "recipes" / "smollm2-135m-instruct"
LLAMA31_TEMPLATE = REPO / "recipes" / "llama-3.1-8b-instruct" / "chat_template_training.jinja"


def _assistant_text(tokenizer, template: str, messages: list[dict]) -> list[str]:
    """The text of each run of tokens the template's markers put in the loss."""
    out = tokenizer.apply_chat_template(messages, chat_template=template, return_dict=True,
                                        return_assistant_tokens_mask=True)
    runs, current = [], []
    for token, masked in zip(out["input_ids"], out["assistant_masks"]):
        if masked:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(r) for r in runs]


def test_smollm2_training_template_renders_like_the_model_and_marks_only_the_answers(smollm2_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    training = (SMOLLM2_RECIPES / "chat_template_training.jinja").read_text()
    assert "{% generation %}" not in tokenizer.chat_template  # why the recipe needs its own copy
    assert rendering_differences(tokenizer, training) == []
    # multi-turn, with and without a system prompt, with the generation prompt: every probe rendered identically
    assert any(len(m) >= 4 and a is False for m, a in PROBES) and any(m[0]["role"] == "system" for m, _ in PROBES)
    messages, _ = PROBES[3]
    answers = [m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant"]
    assert _assistant_text(tokenizer, training, messages) == answers


def test_a_template_for_another_model_is_refused(smollm2_dir, tmp_path, build_dir):
    from training.api import train

    with pytest.raises(RecipeError, match="does not render like the chat template"):
        train("sft", SMOLLM2_RECIPES / "sft.yaml", {
            "model_name_or_path": str(smollm2_dir), "data": str(build_dir), "output_dir": str(tmp_path / "sft"),
            "chat_template_path": str(LLAMA31_TEMPLATE), "report_to": "none", "max_steps": 1})


def test_llama31_training_template_renders_like_trls_copy_of_the_original(tiny_model_dir):
    """Llama 3.1's tokenizer cannot be fetched here; TRL ships its template (trl/chat_templates/llama3_1.jinja),
    which TRL itself matches against Llama 3.1 tokenizers. Rendered by any tokenizer, the two must agree."""
    import trl
    from transformers import AutoTokenizer

    original = (Path(trl.__file__).parent / "chat_templates" / "llama3_1.jinja").read_text()
    training = LLAMA31_TEMPLATE.read_text()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert rendering_differences(tokenizer, training, reference_template=original) == []
    messages, _ = PROBES[3]
    answers = [m["content"].strip() + "<|eot_id|>" for m in messages if m["role"] == "assistant"]
    assert _assistant_text(tokenizer, training, messages) == answers


def test_a_recipes_template_path_is_found_beside_the_recipe_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parsed = parse_recipe("sft", ["--config", str(SMOLLM2_RECIPES / "sft.yaml")], apply_env=False)
    assert Path(parsed.training.chat_template_path) == (SMOLLM2_RECIPES / "chat_template_training.jinja").resolve()
    gpu = parse_recipe("sft", ["--config", str(SMOLLM2_RECIPES / "gpu" / "sft.yaml")],
                       overrides={"use_cpu": True}, apply_env=False)
    assert gpu.training.chat_template_path == parsed.training.chat_template_path
