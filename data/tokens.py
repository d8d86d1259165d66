"""Token counts with a fast (Rust) tokenizer, in batches: the optional max-tokens filter."""

from __future__ import annotations

import functools
from pathlib import Path

BATCH = 4096


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str):
    """A `tokenizers.Tokenizer` from a tokenizer.json file or a model folder holding one."""
    from tokenizers import Tokenizer

    p = Path(path)
    file = p / "tokenizer.json" if p.is_dir() else p
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no tokenizer.json (a fast tokenizer is needed for the max-tokens filter)")
    return Tokenizer.from_file(str(file))


def count_tokens(path: str, texts: list[str]) -> list[int]:
    tok = load_tokenizer(str(path))
    out: list[int] = []
    for i in range(0, len(texts), BATCH):
        encs = tok.encode_batch_fast(texts[i:i + BATCH], add_special_tokens=False) \
            if hasattr(tok, "encode_batch_fast") else tok.encode_batch(texts[i:i + BATCH], add_special_tokens=False)
        out.extend(len(e.ids) for e in encs)
    return out
