import json
import os

import pytest

from flywheel.files import atomic_dir, file_hashes, sha256_json, tree_sha256, write_json_atomic
from flywheel.textdist import edit_cost


def test_atomic_dir_replaces_on_success(tmp_path):
    final = tmp_path / "out"
    with atomic_dir(final) as d:
        (d / "a.txt").write_text("one")
    with atomic_dir(final) as d:
        (d / "b.txt").write_text("two")
    assert sorted(os.listdir(final)) == ["b.txt"]
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []


def test_atomic_dir_keeps_old_state_on_error(tmp_path):
    final = tmp_path / "out"
    with atomic_dir(final) as d:
        (d / "a.txt").write_text("one")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as d:
            (d / "half.txt").write_text("half")
            raise RuntimeError("crash mid-write")
    assert sorted(os.listdir(final)) == ["a.txt"]
    assert os.listdir(tmp_path) == ["out"]


def test_hashes_are_order_independent_and_content_sensitive(tmp_path):
    assert sha256_json({"a": 1, "b": 2}) == sha256_json({"b": 2, "a": 1})
    (tmp_path / "x").write_text("1")
    h1 = tree_sha256(tmp_path)
    (tmp_path / "x").write_text("2")
    assert tree_sha256(tmp_path) != h1
    assert list(file_hashes(tmp_path)) == ["x"]


def test_write_json_atomic_roundtrip(tmp_path):
    write_json_atomic(tmp_path / "m.json", {"k": [1, 2]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"k": [1, 2]}


def test_edit_cost():
    assert edit_cost("abc", "abc") == 0.0
    assert edit_cost("abc", None) == 1.0
    assert edit_cost("", "") == 0.0
    assert edit_cost("abcd", "abXd") == pytest.approx(0.25)
    assert edit_cost("abc", "xyz") == 1.0
