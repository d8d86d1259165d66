"""A local HTTP server that follows vLLM's documented runtime-LoRA contract (vllm/entrypoints/openai).

- GET /v1/models: the base model, then every loaded adapter as {"id": name, "root": path, "parent": base}.
- POST /v1/load_lora_adapter {"lora_name", "lora_path"}: 400 when either is missing or the name is already loaded
  ("The lora adapter '<name>' has already been loaded."), 404 "No adapter found" when the folder has no
  adapter_config.json, else 200 with the plain-text "Success: LoRA adapter '<name>' added successfully.".
  Without VLLM_ALLOW_RUNTIME_LORA_UPDATING the route does not exist (404).
- POST /v1/unload_lora_adapter {"lora_name"}: 404 when unknown.
- POST /v1/completions and /v1/chat/completions: 404 "The model `<name>` does not exist." for unknown models.
Errors are vLLM's ErrorResponse: {"error": {"message", "type", "code"}}.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FakeVLLM:
    def __init__(self, base: str, runtime_updates: bool = True, port: int = 0):
        self.base = base
        self.runtime_updates = runtime_updates
        self.loras: dict[str, str] = {}
        self.requests: list[tuple[str, str, dict | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, body, content_type="application/json"):
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, err_type: str):
                self._send(status, {"error": {"message": message, "type": err_type, "code": status}})

            def do_GET(self):
                server.requests.append(("GET", self.path, None))
                if self.path != "/v1/models":
                    return self._error(404, "Not Found", "NotFoundError")
                cards = [{"id": server.base, "object": "model", "root": server.base, "parent": None}]
                cards += [{"id": n, "object": "model", "root": p, "parent": server.base}
                          for n, p in server.loras.items()]
                self._send(200, {"object": "list", "data": cards})

            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                server.requests.append(("POST", self.path, payload))
                if self.path == "/v1/load_lora_adapter" and server.runtime_updates:
                    name, path = payload.get("lora_name"), payload.get("lora_path")
                    if not name or not path:
                        return self._error(400, "Both 'lora_name' and 'lora_path' must be provided.",
                                           "InvalidUserInput")
                    if name in server.loras:
                        return self._error(400, f"The lora adapter '{name}' has already been loaded.",
                                           "InvalidUserInput")
                    if not (Path(path) / "adapter_config.json").is_file():
                        return self._error(404, f"No adapter found for {path}", "NotFoundError")
                    server.loras[name] = path
                    return self._send(200, f"Success: LoRA adapter '{name}' added successfully.", "text/plain")
                if self.path == "/v1/unload_lora_adapter" and server.runtime_updates:
                    name = payload.get("lora_name")
                    if name not in server.loras:
                        return self._error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
                    del server.loras[name]
                    return self._send(200, f"Success: LoRA adapter '{name}' removed successfully.", "text/plain")
                if self.path in ("/v1/completions", "/v1/chat/completions"):
                    model = payload.get("model")
                    if model != server.base and model not in server.loras:
                        return self._error(404, f"The model `{model}` does not exist.", "NotFoundError")
                    text = f"hello from {model}"
                    if self.path == "/v1/completions":
                        choice = {"index": 0, "text": text, "finish_reason": "length"}
                        obj = "text_completion"
                    else:
                        choice = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": "stop"}
                        obj = "chat.completion"
                    return self._send(200, {"id": "cmpl-1", "object": obj, "model": model, "choices": [choice],
                                            "usage": {"prompt_tokens": 3, "completion_tokens": 4}})
                return self._error(404, "Not Found", "NotFoundError")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeVLLM":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main(argv: list[str]) -> None:
    """`python -m tests.serving.fake_vllm serve BASE [--lora-modules name=path ...] [--port P] ...`: stands in for
    the `vllm` command (scripts/vllm_check.sh's test); honours VLLM_ALLOW_RUNTIME_LORA_UPDATING like vLLM."""
    import os

    assert argv[0] == "serve", argv
    base, port, modules, i = argv[1], 8000, [], 2
    while i < len(argv):
        if argv[i] == "--port":
            port, i = int(argv[i + 1]), i + 2
        elif argv[i] == "--lora-modules":
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                modules.append(argv[i])
                i += 1
        else:
            i += 1
    runtime = os.environ.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "").lower() in ("1", "true")
    server = FakeVLLM(base, runtime_updates=runtime, port=port)
    for m in modules:
        name, path = m.split("=", 1)
        server.loras[name] = path
    server.httpd.serve_forever()


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
