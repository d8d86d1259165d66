"""An imported dataset goes all the way: `flywheel data import preference`, `flywheel data build`, and one SFT
and one DPO step of TRL's trainers on the tiny random Llama of tests/data/test_trl.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.data.test_trl import common, load, tiny, trained_one_step  # noqa: F401  (tiny is a fixture)

HH = Path(__file__).parent / "fixtures" / "preference" / "hh.jsonl"


@pytest.fixture(scope="module")
def imported_build(tmp_path_factory):
    from flywheel.cli import main

    work = tmp_path_factory.mktemp("imported")
    assert main(["data", "import", "preference", str(HH), "--out", str(work / "hh.jsonl")]) == 0
    assert main(["data", "build", str(work / "hh.jsonl"), "--out", str(work / "build"), "--test-fraction", "0",
                 "--quiet"]) == 0
    return work / "build"


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_imported_pairs_train_one_step(tiny, imported_build, tmp_path, kind):  # noqa: F811
    import datasets
    import trl

    model_dir, _ = tiny
    model, tok = load(model_dir)
    train = datasets.load_from_disk(str(imported_build / kind))["train"]
    assert len(train) == 3  # the three usable pairs of the fixture: 3 accepted answers, 3 regenerated away
    if kind == "dpo":
        assert sorted(r[0]["content"] for r in train["chosen"]) == \
            ["Eight.", "Put it in boiling water for 9 minutes, then cool it in cold water.", "Rome."]
    Config, Trainer = {"sft": (trl.SFTConfig, trl.SFTTrainer), "dpo": (trl.DPOConfig, trl.DPOTrainer)}[kind]
    trainer = Trainer(model=model, args=Config(**common(tmp_path), max_length=256), train_dataset=train,
                      processing_class=tok)
    trained_one_step(trainer)
