"""`flywheel serve-sync`: bring a running vLLM server up to date with the registry, without restarting it.

vLLM (started with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True) adds adapters at run time through
POST /v1/load_lora_adapter {"lora_name", "lora_path"} and lists them in GET /v1/models. Every version is loaded
under its own versioned name (support-v3), never over an existing name: vLLM can serve stale prefix-cache entries
for a name whose weights changed, and the older version stays loaded so that a rollback is only a change of the
name clients ask for. After loading, one smoke request with model=<versioned name> proves the adapter answers.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from serving.registry import Registry

EXIT_LOAD_FAILED = 10
EXIT_SMOKE_FAILED = 11


class ServeSyncError(RuntimeError):
    def __init__(self, message: str, exit_code: int = EXIT_LOAD_FAILED):
        super().__init__(message)
        self.exit_code = exit_code


def _error_message(body: str) -> str:
    """vLLM's ErrorResponse is {"error": {"message", ...}} (newer) or {"message", ...} (older)."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:500]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and "message" in err:
            return str(err["message"])
    return body.strip()[:500]


class VLLMClient:
    def __init__(self, url: str, api_key: str | None = None, timeout: float = 120.0):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def request(self, method: str, path: str, payload: dict | None = None) -> tuple[int, str]:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            raise ServeSyncError(f"{self.url}{path}: cannot reach the server ({exc})") from exc

    def models(self) -> dict[str, dict[str, Any]]:
        status, body = self.request("GET", "/v1/models")
        if status != 200:
            raise ServeSyncError(f"{self.url}/v1/models: HTTP {status}: {_error_message(body)}")
        return {card["id"]: card for card in json.loads(body).get("data", [])}

    def load_lora(self, name: str, path: str) -> None:
        status, body = self.request("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
        if status == 404 and "No adapter found" not in body:
            raise ServeSyncError(
                f"{self.url}/v1/load_lora_adapter: HTTP 404: runtime LoRA loading is off; start vLLM with "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora"
            )
        if status != 200:
            raise ServeSyncError(f"loading {name} from {path}: HTTP {status}: {_error_message(body)}")

    def unload_lora(self, name: str) -> None:
        status, body = self.request("POST", "/v1/unload_lora_adapter", {"lora_name": name})
        if status != 200:
            raise ServeSyncError(f"unloading {name}: HTTP {status}: {_error_message(body)}")

    def smoke(self, model: str, prompt: str, chat: bool, max_tokens: int = 16) -> dict[str, Any]:
        if chat:
            endpoint = "/v1/chat/completions"
            payload = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                       "temperature": 0}
        else:
            endpoint = "/v1/completions"
            payload = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
        status, body = self.request("POST", endpoint, payload)
        if status != 200:
            raise ServeSyncError(f"smoke request {endpoint} model={model}: HTTP {status}: {_error_message(body)}",
                                 EXIT_SMOKE_FAILED)
        try:
            response = json.loads(body)
            choice = response["choices"][0]
            text = choice["message"]["content"] if chat else choice["text"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ServeSyncError(f"smoke request {endpoint} model={model}: unexpected response {body[:300]!r}",
                                 EXIT_SMOKE_FAILED) from exc
        if response.get("model") not in (None, model):
            raise ServeSyncError(f"smoke request asked for {model}, the server answered as {response.get('model')}",
                                 EXIT_SMOKE_FAILED)
        if not isinstance(text, str):
            raise ServeSyncError(f"smoke request {endpoint} model={model}: no text in {body[:300]!r}",
                                 EXIT_SMOKE_FAILED)
        return {"endpoint": endpoint, "status": status, "text": text}


def serve_sync(
    url: str,
    alias: str | None = None,
    registry: str | Path | None = None,
    prompt: str = "Say hello.",
    chat: bool = False,
    api_key: str | None = None,
    timeout: float = 120.0,
    keep: int | None = None,
) -> list[dict[str, Any]]:
    """Load each alias's current version (or only `alias`'s) into the vLLM at `url` and smoke-test it.

    Returns one record per alias: name, action ("loaded" or "already loaded"), smoke result, the alias's other
    versions still loaded on the server, and those unloaded. With `keep=N`, only the N most recent versions of the
    alias other than the current one stay loaded (by version number); the default unloads nothing. Raises
    ServeSyncError when a load or a smoke request fails, or when the server holds the versioned name with another
    path (a name is never reused for other weights).
    """
    if keep is not None and keep < 0:
        raise ServeSyncError("keep must be 0 or more", EXIT_LOAD_FAILED)
    reg = Registry(registry)
    client = VLLMClient(url, api_key=api_key, timeout=timeout)
    aliases = [alias] if alias else reg.aliases()
    if not aliases:
        raise ServeSyncError(f"{reg.storage.url}: no aliases to serve (promote one first)")
    results = []
    for name in aliases:
        entry = reg.current(name)
        version, path = entry["name"], entry["path"]
        if "://" in path:
            raise ServeSyncError(f"{version}: stored at {path}; vLLM loads adapters from a local path, so mount "
                                 "or copy the registry onto the serving host and sync from that folder")
        if bad := reg.verify(version):
            raise ServeSyncError(f"{version}: stored files changed since promotion ({', '.join(bad)}); not loading")
        loaded = client.models()
        if version in loaded:
            root = loaded[version].get("root")
            if root not in (None, path) and Path(str(root)).resolve() != Path(path).resolve():
                raise ServeSyncError(
                    f"the server already serves {version} from {root}, not {path}; refusing to reuse the name "
                    "(another registry?)")
            action = "already loaded"
        else:
            client.load_lora(version, path)
            action = "loaded"
            if version not in client.models():
                raise ServeSyncError(f"{version}: the server accepted the load but does not list it in /v1/models")
        smoke = client.smoke(version, prompt, chat)
        # Only after the new version answered: the older ones are the way back.
        pattern = re.compile(rf"^{re.escape(name)}-v(\d+)$")
        others = sorted((int(m.group(1)), model) for model in client.models()
                        if (m := pattern.match(model)) and model != version)
        unloaded = []
        if keep is not None:
            for _, model in others[: max(len(others) - keep, 0)]:
                client.unload_lora(model)
                unloaded.append(model)
        results.append({"alias": name, "name": version, "path": path, "action": action, "smoke": smoke,
                        "loaded_before": [m for _, m in others if m not in unloaded], "unloaded": unloaded})
    return results
