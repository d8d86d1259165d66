"""What vLLM accepts as a LoRA adapter, and the `vllm serve` command line for the promoted ones.

Pure functions: the registry calls them at promotion time so that an adapter vLLM would refuse never becomes an
alias, and the serving manifest always carries a command line that starts a server able to load every promoted
version.
"""

from __future__ import annotations

import shlex
from typing import Any

# `--max-lora-rank` takes one of these values (vLLM's LoRAConfig); an adapter of rank r needs the next one up.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def adapter_rank(adapter_config: dict[str, Any]) -> int:
    """The largest LoRA rank in the adapter (rank_pattern may raise it for some modules)."""
    ranks = [int(adapter_config.get("r", 8))]
    ranks += [int(v) for v in (adapter_config.get("rank_pattern") or {}).values()]
    return max(ranks)


def vllm_max_lora_rank(rank: int) -> int:
    for allowed in VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ValueError(f"LoRA rank {rank} is above vLLM's largest --max-lora-rank ({VLLM_LORA_RANKS[-1]})")


def vllm_problems(adapter_config: dict[str, Any]) -> list[str]:
    """Reasons vLLM would refuse this adapter; empty when it can serve it."""
    problems = []
    if adapter_config.get("peft_type", "LORA") != "LORA":
        problems.append(f"peft_type is {adapter_config.get('peft_type')!r}; vLLM serves LORA adapters only")
    if adapter_config.get("modules_to_save"):
        problems.append(
            f"modules_to_save={adapter_config['modules_to_save']!r}: vLLM cannot serve fully trained extra modules"
        )
    if adapter_config.get("use_dora"):
        problems.append("use_dora=true: vLLM does not serve DoRA adapters")
    if adapter_config.get("bias", "none") != "none":
        problems.append(f"bias={adapter_config.get('bias')!r}: vLLM needs bias 'none'")
    if not adapter_config.get("target_modules"):
        problems.append("target_modules is empty")
    rank = adapter_rank(adapter_config)
    if rank > VLLM_LORA_RANKS[-1]:
        problems.append(f"rank {rank} is above vLLM's largest --max-lora-rank ({VLLM_LORA_RANKS[-1]})")
    return problems


def vllm_serve_command(base: str, adapters: list[dict[str, Any]], extra_args: list[str] | None = None) -> list[str]:
    """`vllm serve BASE --enable-lora --lora-modules name=path ... --max-lora-rank R --max-loras K`.

    `adapters` are serving-manifest rows (`name`, `path`, `rank`). K is the number of adapters, so that every
    promoted version (the current ones and the ones kept for rollback) can sit in a batch at once.
    """
    if not adapters:
        return ["vllm", "serve", base]
    cmd = ["vllm", "serve", base, "--enable-lora", "--lora-modules"]
    cmd += [f"{a['name']}={a['path']}" for a in adapters]
    cmd += ["--max-lora-rank", str(vllm_max_lora_rank(max(int(a["rank"]) for a in adapters)))]
    cmd += ["--max-loras", str(len(adapters))]
    return cmd + list(extra_args or [])


def shell_line(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)
