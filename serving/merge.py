"""`flywheel merge`: fold a LoRA adapter into its base weights, for servers without LoRA support.

The merged folder is a plain transformers model (save_pretrained + tokenizer) written atomically, with
`merge_manifest.json` saying which base weights and which adapter it came from. The base weights are checked against
the adapter's lineage first: merging onto the wrong base raises no error in PEFT, it silently makes a wrong model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from flywheel.files import atomic_dir, model_weights_sha256, sha256_file, sha256_json

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "tokenizer.model", "vocab.json", "merges.txt")


def resolve_adapter(adapter: str | os.PathLike, registry: str | os.PathLike | None = None) -> tuple[Path, dict | None]:
    """An adapter folder, or an alias / version name in the registry (then also its registry entry)."""
    path = Path(adapter)
    if path.is_dir():
        return path, None
    from serving.registry import Registry, RegistryError

    reg = Registry(registry)
    name = str(adapter)
    try:
        entry = reg.entry(name) if reg.alias_state(name) is None else reg.current(name)
    except RegistryError as exc:
        raise FileNotFoundError(f"{adapter}: neither an adapter folder nor a name in registry "
                                f"{reg.storage.url} ({exc})") from None
    if "://" in entry["path"]:
        raise ValueError(f"{entry['name']} is stored at {entry['path']}; copy the registry locally first")
    if bad := reg.verify(entry["name"]):
        raise ValueError(f"{entry['name']}: stored files changed since promotion: {', '.join(bad)}")
    return Path(entry["path"]), entry


def base_for(adapter_dir: Path, entry: dict | None = None, base: str | os.PathLike | None = None) -> dict[str, Any]:
    """Where the base model is and which weights the adapter was trained on (registry entry > lineage > config)."""
    known: dict[str, Any] = {}
    if entry is not None:
        known = dict(entry.get("base") or {})
    elif (adapter_dir / "lineage.json").is_file():
        known = dict(json.loads((adapter_dir / "lineage.json").read_text()).get("base_model") or {})
    if not known.get("path"):
        config = json.loads((adapter_dir / "adapter_config.json").read_text())
        known["path"] = config.get("base_model_name_or_path")
    if base is not None:
        known["path"] = str(base)
    if not known.get("path"):
        raise ValueError(f"{adapter_dir}: no base model recorded; pass --base")
    path = Path(known["path"])
    expected = known.get("weights_sha256")
    if path.is_dir() and expected:
        actual = model_weights_sha256(path)
        if actual != expected:
            raise ValueError(f"base {path}: weights sha256 {actual} are not the {expected} the adapter was trained "
                             "on; merging would silently build a wrong model")
    return known


def load_base_and_adapter(adapter_dir: Path, base: dict[str, Any]):
    """(PeftModel in eval mode, tokenizer): the tokenizer saved with the adapter if there is one, else the base's."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base["path"], revision=base.get("revision"), dtype="auto")
    model = PeftModel.from_pretrained(model, str(adapter_dir))
    has_tokenizer = (adapter_dir / "tokenizer_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir) if has_tokenizer else base["path"])
    return model.eval(), tokenizer


def merge_adapter(adapter: str | os.PathLike, out: str | os.PathLike, base: str | os.PathLike | None = None,
                  registry: str | os.PathLike | None = None) -> Path:
    """Merge `adapter` (folder, alias or version name) into its base and save the result to `out` atomically."""
    adapter_dir, entry = resolve_adapter(adapter, registry)
    base_info = base_for(adapter_dir, entry, base)
    model, tokenizer = load_base_and_adapter(adapter_dir, base_info)
    merged = model.merge_and_unload()
    out = Path(out)
    with atomic_dir(out) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        manifest = {
            "kind": "flywheel.merged_model",
            "base": base_info,
            "adapter": {
                "path": str(adapter_dir.resolve()),
                "registry_name": entry["name"] if entry else None,
                "adapter_sha256": sha256_json({n: sha256_file(adapter_dir / n)
                                               for n in ("adapter_config.json", "adapter_model.safetensors")}),
            },
            "weights_sha256": model_weights_sha256(tmp),
        }
        (tmp / "merge_manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out
