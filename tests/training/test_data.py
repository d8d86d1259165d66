"""Build folders as training inputs: manifests checked, kinds checked, folders mixed by weight."""

from __future__ import annotations

import shutil

import pytest

from training.data import BuildError, check_build, load_training_data, parse_data_sources


def test_dpo_refuses_an_sft_only_build(sft_only_build_dir):
    with pytest.raises(BuildError) as err:
        load_training_data([str(sft_only_build_dir)], "dpo", seed=0)
    message = str(err.value)
    assert str(sft_only_build_dir) in message and "DPO" in message and "it has: sft" in message


def test_a_folder_without_manifest_is_refused(tmp_path):
    with pytest.raises(BuildError, match="no manifest.json"):
        load_training_data([str(tmp_path)], "sft", seed=0)


def test_changed_data_files_are_refused(build_dir, tmp_path):
    copy = tmp_path / "build"
    shutil.copytree(build_dir, copy)
    arrow = next((copy / "dpo").rglob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes() + b"\0")
    with pytest.raises(BuildError, match="no longer match the sha256"):
        check_build(parse_data_sources([str(copy)])[0], "dpo")


def test_weights_mix_folders(build_dir, tmp_path):
    copy = tmp_path / "second"
    shutil.copytree(build_dir, copy)
    one, _, _ = load_training_data([str(build_dir)], "kto", seed=0)
    mixed, _, builds = load_training_data([f"{build_dir}:2", {"path": str(copy), "weight": 0.5}], "kto", seed=0)
    assert len(mixed) == 2 * len(one) + round(0.5 * len(one))
    assert mixed.column_names == ["prompt", "completion", "label"]  # metadata columns stay in the build
    assert [b.source.weight for b in builds] == [2.0, 0.5]
    assert builds[0].lineage("kto")["manifest_sha256"] == builds[1].lineage("kto")["manifest_sha256"]


def test_bad_weights_are_errors():
    with pytest.raises(BuildError, match="positive"):
        parse_data_sources(["a:0"])
    with pytest.raises(BuildError, match="no training data"):
        parse_data_sources([])
