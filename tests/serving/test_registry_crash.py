"""A promotion killed with SIGKILL at any step leaves the previous alias intact and the registry usable; concurrent
promotions are serialised; the same code runs on an fsspec filesystem."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from serving.registry import list_registry, promote, rollback, show

# Runs one promotion in a child process that SIGKILLs itself at the chosen step (a real kill: no finally blocks,
# no atexit, the kernel drops its lock).
KILLER = textwrap.dedent("""
    import os, signal, sys, tempfile
    from serving import registry, storage

    point, adapter, gate, reg = sys.argv[1:5]
    die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)

    if point == "mid_copy":
        real_copy, calls = storage.shutil.copyfile, []
        def copy_then_die(src, dst):
            real_copy(src, dst)
            calls.append(dst)
            if len(calls) == 2:
                die()
        storage.shutil.copyfile = copy_then_die
    elif point == "before_alias_write":
        real_write = storage.LocalStorage.write_text
        def write(self, path, text):
            if "/aliases/" in path:
                die()
            real_write(self, path, text)
        storage.LocalStorage.write_text = write
    elif point == "mid_alias_write":
        real_atomic = storage.write_text_atomic
        def half_write(path, text):
            if "/aliases/" not in str(path):
                return real_atomic(path, text)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".support.json.", suffix=".tmp")
            os.write(fd, text[: len(text) // 2].encode())
            os.fsync(fd)
            die()
        storage.write_text_atomic = half_write
    elif point == "after_alias_write":
        registry.Registry.write_serving_manifest = die
    registry.promote(adapter, gate, "support", registry=reg)
    print("not killed")
""")


@pytest.mark.parametrize("point", ["mid_copy", "before_alias_write", "mid_alias_write", "after_alias_write"])
def test_sigkill_mid_promotion_leaves_previous_alias(bench, point):
    promote(*bench.gated_adapter("a1", seed=1), "support", registry=bench.registry)
    alias_file = bench.registry / "aliases" / "support.json"
    before = alias_file.read_bytes()
    adapter2, gate2 = bench.gated_adapter("a2", seed=2)

    proc = subprocess.run([sys.executable, "-c", KILLER, point, str(adapter2), str(gate2), str(bench.registry)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stdout + proc.stderr

    state = json.loads(alias_file.read_text())  # always a whole, parseable file
    if point == "after_alias_write":
        # The rename happened: the new alias is complete, with its history event.
        assert state["current"] == "support-v2" and len(state["history"]) == 2
    else:
        assert alias_file.read_bytes() == before
        assert state["current"] == "support-v1" and len(state["history"]) == 1

    # Usable afterwards: the lock is free, numbers never reuse a half-written version, rollback works.
    orphaned = point in ("before_alias_write", "mid_alias_write")  # version stored, alias never moved to it
    assert (bench.registry / "versions" / "support-v2").exists() == (point != "mid_copy")
    assert show("support", registry=bench.registry)["unreferenced_versions"] == (["support-v2"] if orphaned else [])
    entry = promote(*bench.gated_adapter("a3", seed=3), "support", registry=bench.registry)
    assert entry["name"] == ("support-v2" if point == "mid_copy" else "support-v3")
    assert not [p.name for p in (bench.registry / "versions").iterdir() if p.name.startswith(".")]
    assert show(entry["name"], registry=bench.registry)["intact"]
    assert rollback("support", registry=bench.registry)["name"] == state["current"]
    manifest = json.loads((bench.registry / "serving" / "manifest.json").read_text())
    assert manifest["servers"][0]["adapters"][0]["name"] == state["current"]


SLOW_PROMOTER = textwrap.dedent("""
    import sys, time
    from serving import registry, storage
    real_put = storage.LocalStorage.put_dir
    def slow_put(self, files, dest):
        time.sleep(0.5)  # widen the window two unserialised writers would race in
        real_put(self, files, dest)
    storage.LocalStorage.put_dir = slow_put
    print(registry.promote(sys.argv[1], sys.argv[2], "support", registry=sys.argv[3])["name"])
""")


def test_concurrent_promotions_are_serialised(bench):
    jobs = [bench.gated_adapter(f"c{i}", seed=10 + i) for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", SLOW_PROMOTER, str(a), str(g), str(bench.registry)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for a, g in jobs]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted(o.strip() for o, _ in outs) == ["support-v1", "support-v2"]
    history = show("support", registry=bench.registry)["history"]
    assert [(e["from"], e["to"]) for e in history] == [(None, "support-v1"), ("support-v1", "support-v2")]


@pytest.mark.parametrize("protocol", ["memory", "file"])
def test_registry_on_fsspec_filesystems(bench, protocol):
    url = (f"memory://flywheel-test-{bench.root.name}/registry" if protocol == "memory"
           else f"file://{bench.root}/fsspec-registry")
    promote(*bench.gated_adapter("m1", seed=1), "support", registry=url)
    entry = promote(*bench.gated_adapter("m2", seed=2), "support", registry=url)
    assert entry["path"].endswith("/versions/support-v2/adapter")
    # What vLLM is given: a URL for a remote store, a plain path for local files.
    assert entry["path"].startswith("memory://") if protocol == "memory" else entry["path"].startswith("/")
    assert show("support-v2", registry=url)["intact"]
    assert rollback("support", registry=url)["name"] == "support-v1"
    (row,) = list_registry(url)
    assert row["current"] == "support-v1" and row["versions"] == ["support-v1", "support-v2"]


def test_a_held_lock_times_out_with_a_clear_error(bench):
    from serving.registry import Registry, RegistryError

    adapter, gate = bench.gated_adapter("a1", seed=1)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from serving.storage import open_storage
        with open_storage({str(bench.registry)!r}).lock():
            print("held", flush=True)
            time.sleep(30)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RegistryError, match="another promotion holds the registry lock"):
            promote(adapter, gate, "support", registry=bench.registry, lock_timeout_s=0.3)
    finally:
        holder.kill()
        holder.wait()
    assert promote(adapter, gate, "support", registry=bench.registry)["name"] == "support-v1"
    assert Registry(bench.registry).current("support")["name"] == "support-v1"
