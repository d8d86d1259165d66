"""The built datasets are what TRL's trainers take: one step each of SFT, DPO and KTO on a tiny random Llama."""

from __future__ import annotations

from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "samples" / "capture-sample.jsonl"
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\n' }}{%- endif -%}"
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A byte-level BPE with a chat template and a 2-layer random Llama, made here (no hub)."""
    import datasets
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    datasets.disable_progress_bars()
    texts = [line for line in SAMPLE.read_text().splitlines()] * 3
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|end|>", pad_token="<|pad|>",
                                        chat_template=CHAT_TEMPLATE, model_max_length=512)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=None, tie_word_embeddings=True)
    model_dir = tmp_path_factory.mktemp("tiny")
    LlamaForCausalLM(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    from data.build import build_datasets

    out = tmp_path_factory.mktemp("build") / "b"
    build_datasets([str(SAMPLE)], out, test_fraction=0.0)
    return model_dir, out


def common(tmp_path) -> dict:
    return dict(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, learning_rate=1e-3,
                report_to="none", use_cpu=True, bf16=False, fp16=False, activation_checkpointing=False,
                save_strategy="no", logging_steps=1, dataloader_num_workers=0, seed=0)


def load(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32"), AutoTokenizer.from_pretrained(model_dir)


def trained_one_step(trainer) -> float:
    import torch

    before = [p.detach().clone() for p in trainer.model.parameters()]
    result = trainer.train()
    assert result.global_step == 1
    assert torch.isfinite(torch.tensor(result.training_loss))
    changed = any(not torch.equal(b, p.detach()) for b, p in zip(before, trainer.model.parameters()))
    assert changed, "one optimizer step changed no weight"
    return result.training_loss


@pytest.mark.parametrize("kind", ["sft", "dpo", "kto"])
def test_trainer_takes_one_step_on_the_built_dataset(tiny, tmp_path, kind):
    import datasets
    import trl

    model_dir, build = tiny
    model, tok = load(model_dir)
    train = datasets.load_from_disk(str(build / kind))["train"]
    if kind == "kto":
        assert set(train["label"]) == {True, False}
    Config, Trainer = {"sft": (trl.SFTConfig, trl.SFTTrainer), "dpo": (trl.DPOConfig, trl.DPOTrainer),
                       "kto": (trl.KTOConfig, trl.KTOTrainer)}[kind]
    trainer = Trainer(model=model, args=Config(**common(tmp_path), max_length=256), train_dataset=train,
                      processing_class=tok)
    trained_one_step(trainer)
