"""serve-sync against a local server that follows vLLM's runtime-LoRA contract (tests/serving/fake_vllm.py)."""

from __future__ import annotations

import pytest

from flywheel.cli import main as flywheel_main
from serving.registry import promote, rollback
from serving.sync import EXIT_LOAD_FAILED, ServeSyncError, serve_sync
from tests.serving.fake_vllm import FakeVLLM


def test_sync_loads_each_version_under_its_own_name_and_keeps_the_previous(bench):
    promote(*bench.gated_adapter("a1", seed=1), "support", registry=bench.registry)
    with FakeVLLM(str(bench.base_dir)) as server:
        (r1,) = serve_sync(server.url, registry=bench.registry)
        v1_path = str(bench.registry / "versions" / "support-v1" / "adapter")
        assert r1["name"] == "support-v1" and r1["action"] == "loaded"
        assert server.loras == {"support-v1": v1_path}
        assert r1["smoke"] == {"endpoint": "/v1/completions", "status": 200, "text": "hello from support-v1"}

        promote(*bench.gated_adapter("a2", seed=2), "support", registry=bench.registry)
        (r2,) = serve_sync(server.url, alias="support", registry=bench.registry, chat=True)
        assert r2["name"] == "support-v2" and r2["loaded_before"] == ["support-v1"]
        assert set(server.loras) == {"support-v1", "support-v2"}  # never replaced in place, never unloaded
        assert r2["smoke"]["endpoint"] == "/v1/chat/completions"
        loads = [p for m, path, p in server.requests if path == "/v1/load_lora_adapter"]
        assert [p["lora_name"] for p in loads] == ["support-v1", "support-v2"]

        # Idempotent: a second sync sends no load (vLLM would answer 400 for a duplicate name).
        (again,) = serve_sync(server.url, registry=bench.registry)
        assert again["action"] == "already loaded"
        assert len([1 for _, path, _ in server.requests if path == "/v1/load_lora_adapter"]) == 2

        # A rollback is instant: v1 is still loaded, the smoke request goes to it.
        rollback("support", registry=bench.registry)
        (back,) = serve_sync(server.url, registry=bench.registry)
        assert back["name"] == "support-v1" and back["action"] == "already loaded"


def test_sync_refuses_to_reuse_a_name_loaded_from_elsewhere(bench):
    promote(*bench.gated_adapter("a1", seed=1), "support", registry=bench.registry)
    with FakeVLLM(str(bench.base_dir)) as server:
        server.loras["support-v1"] = "/somewhere/else"
        with pytest.raises(ServeSyncError, match="refusing to reuse the name"):
            serve_sync(server.url, registry=bench.registry)


def test_sync_reports_server_without_runtime_lora_updates(bench, capsys):
    promote(*bench.gated_adapter("a1", seed=1), "support", registry=bench.registry)
    with FakeVLLM(str(bench.base_dir), runtime_updates=False) as server:
        code = flywheel_main(["serve-sync", "--url", server.url, "--registry", str(bench.registry)])
    assert code == EXIT_LOAD_FAILED
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" in capsys.readouterr().err


def test_sync_cli_prints_what_it_did(bench, capsys):
    promote(*bench.gated_adapter("a1", seed=1), "support", registry=bench.registry)
    with FakeVLLM(str(bench.base_dir)) as server:
        assert flywheel_main(["serve-sync", "--url", server.url, "--registry", str(bench.registry)]) == 0
    assert "support: support-v1 loaded; smoke /v1/completions -> 'hello from support-v1'" in capsys.readouterr().out


def test_sync_keep_unloads_only_the_oldest_versions_after_the_smoke_request(bench):
    for i in range(1, 5):
        promote(*bench.gated_adapter(f"a{i}", seed=i), "support", registry=bench.registry)
    with FakeVLLM(str(bench.base_dir)) as server:
        for v in (1, 2, 3):
            server.loras[f"support-v{v}"] = str(bench.registry / "versions" / f"support-v{v}" / "adapter")
        server.loras["other-v1"] = "/elsewhere"  # another alias's versions are not ours to unload
        (r,) = serve_sync(server.url, registry=bench.registry, keep=1)
        assert r["name"] == "support-v4" and r["unloaded"] == ["support-v1", "support-v2"]
        assert r["loaded_before"] == ["support-v3"]
        assert set(server.loras) == {"support-v3", "support-v4", "other-v1"}
        paths = [path for _, path, _ in server.requests if path.startswith("/v1/")]
        assert paths.index("/v1/completions") < paths.index("/v1/unload_lora_adapter")


def test_client_surfaces_vllm_error_messages(bench):
    from serving.sync import VLLMClient

    promote(*bench.gated_adapter("a1", seed=1), "support", registry=bench.registry)
    path = str(bench.registry / "versions" / "support-v1" / "adapter")
    with FakeVLLM(str(bench.base_dir)) as server:
        client = VLLMClient(server.url)
        client.load_lora("support-v1", path)
        with pytest.raises(ServeSyncError, match="HTTP 400: The lora adapter 'support-v1' has already been loaded"):
            client.load_lora("support-v1", path)
        with pytest.raises(ServeSyncError, match="HTTP 404: No adapter found"):
            client.load_lora("support-v9", str(bench.root))
        with pytest.raises(ServeSyncError, match="does not exist") as exc:
            client.smoke("support-v9", "hi", chat=False)
        assert exc.value.exit_code == 11
    with pytest.raises(ServeSyncError, match="cannot reach the server"):
        VLLMClient(server.url, timeout=2).models()
