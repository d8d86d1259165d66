#!/usr/bin/env bash
# Check a registry against a real vLLM on a GPU machine: start `vllm serve` with the serving manifest's command
# line, run `flywheel serve-sync` against it, and check what vLLM's runtime-LoRA contract promises.
#
#   scripts/vllm_check.sh [REGISTRY]            (default: $FLYWHEEL_REGISTRY, else ./registry)
#
# Needs: a CUDA GPU, `pip install vllm` in the active environment (next to flywheel), a registry with at least one
# promoted alias whose base model folder exists on this machine, and the registry at the path it was promoted
# under (vLLM loads adapters from the paths in serving/manifest.json).
# Environment: PORT (default 8011), VLLM_EXTRA_ARGS (e.g. "--max-model-len 512 --gpu-memory-utilization 0.3"),
# READY_TIMEOUT (seconds to wait for the server, default 900), LOG (server log, default vllm_check.log).
#
# Not run on the development machine (no GPU there): the same steps run in tests/serving/test_serve_sync.py against
# a local server that follows vLLM's documented contract.
set -euo pipefail

REGISTRY=${1:-${FLYWHEEL_REGISTRY:-registry}}
PORT=${PORT:-8011}
READY_TIMEOUT=${READY_TIMEOUT:-900}
LOG=${LOG:-vllm_check.log}
URL="http://127.0.0.1:${PORT}"
MANIFEST="${REGISTRY}/serving/manifest.json"

fail() { echo "vllm_check: FAIL: $*" >&2; exit 1; }
[ -f "$MANIFEST" ] || fail "$MANIFEST not found: promote an adapter first (flywheel promote ... --registry $REGISTRY)"
command -v vllm >/dev/null || fail "vllm is not installed (pip install vllm)"
command -v flywheel >/dev/null || fail "flywheel is not installed (pip install -e .)"

# The manifest's command for the first base, one argument per line (paths may hold spaces).
mapfile -t CMD < <(python - "$MANIFEST" <<'EOF'
import json, sys
servers = json.load(open(sys.argv[1]))["servers"]
if not servers:
    sys.exit("serving manifest lists no server")
print("\n".join(servers[0]["command"]))
EOF
)
# shellcheck disable=SC2206
EXTRA=(${VLLM_EXTRA_ARGS:-})
echo "vllm_check: ${CMD[*]} --port $PORT ${EXTRA[*]}"

VLLM_ALLOW_RUNTIME_LORA_UPDATING=True "${CMD[@]}" --port "$PORT" "${EXTRA[@]}" >"$LOG" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true' EXIT

deadline=$(( $(date +%s) + READY_TIMEOUT ))
until curl -sf "$URL/v1/models" >/dev/null; do
  kill -0 "$SERVER" 2>/dev/null || { tail -n 40 "$LOG" >&2; fail "vllm serve exited before it was ready"; }
  [ "$(date +%s)" -lt "$deadline" ] || { tail -n 40 "$LOG" >&2; fail "server not ready after ${READY_TIMEOUT}s"; }
  sleep 5
done
echo "vllm_check: server ready: $(curl -s "$URL/v1/models" | python -c 'import json,sys; print([m["id"] for m in json.load(sys.stdin)["data"]])')"

# 1. serve-sync: every alias's current version is loaded (here already, from --lora-modules) and answers.
flywheel serve-sync --url "$URL" --registry "$REGISTRY"

# 2. A version that is not yet on the server goes in through the runtime API under its own name, and the versions
#    loaded before stay listed. Use the current version of the first alias under a fresh check name.
read -r ALIAS NAME APATH < <(python - "$REGISTRY" <<'EOF'
import sys
from serving.registry import Registry
reg = Registry(sys.argv[1])
alias = reg.aliases()[0]
entry = reg.current(alias)
print(alias, entry["name"], entry["path"])
EOF
)
CHECK_NAME="${NAME}-vllmcheck-$$"
code=$(curl -s -o /tmp/vllm_check_load.out -w '%{http_code}' -H 'Content-Type: application/json' \
  -d "{\"lora_name\": \"${CHECK_NAME}\", \"lora_path\": \"${APATH}\"}" "$URL/v1/load_lora_adapter")
[ "$code" = 200 ] || fail "runtime load of ${CHECK_NAME}: HTTP $code $(cat /tmp/vllm_check_load.out)"
curl -s "$URL/v1/models" | python -c "
import json, sys
ids = [m['id'] for m in json.load(sys.stdin)['data']]
assert '${CHECK_NAME}' in ids and '${NAME}' in ids, ids
print('vllm_check: loaded side by side:', ids)"

# 3. Loading the same name again is refused with 400 (why serve-sync never reloads a name in place).
code=$(curl -s -o /tmp/vllm_check_dup.out -w '%{http_code}' -H 'Content-Type: application/json' \
  -d "{\"lora_name\": \"${CHECK_NAME}\", \"lora_path\": \"${APATH}\"}" "$URL/v1/load_lora_adapter")
[ "$code" = 400 ] || fail "duplicate load answered HTTP $code, expected 400: $(cat /tmp/vllm_check_dup.out)"
echo "vllm_check: duplicate name refused with 400: $(cat /tmp/vllm_check_dup.out)"

# 4. Smoke requests by versioned name, completions and chat (serve-sync's own smoke request used completions).
flywheel serve-sync --url "$URL" --registry "$REGISTRY" --alias "$ALIAS" --chat
curl -sf -H 'Content-Type: application/json' \
  -d "{\"model\": \"${CHECK_NAME}\", \"prompt\": \"Hello\", \"max_tokens\": 8, \"temperature\": 0}" \
  "$URL/v1/completions" | python -c "
import json, sys
r = json.load(sys.stdin)
assert r['model'] == '${CHECK_NAME}', r
print('vllm_check: completion from', r['model'], repr(r['choices'][0]['text']))"

# 5. Unload the check name; the registry's versions stay loaded.
curl -sf -H 'Content-Type: application/json' -d "{\"lora_name\": \"${CHECK_NAME}\"}" \
  "$URL/v1/unload_lora_adapter" >/dev/null || fail "unload of ${CHECK_NAME} failed"
echo "vllm_check: OK"
