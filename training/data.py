"""Training inputs: the build folders `flywheel data build` wrote, checked against their manifests and mixed.

A run reads only what the data stage wrote (docs/architecture.md, "Build dir"): `manifest.json` says what a folder
is and how many examples of each kind it holds; `DIR/<kind>` is a `DatasetDict` with `train` and `test` splits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flywheel.files import file_hashes, sha256_file, sha256_json

BUILD_KIND = "flywheel.dataset_build"
SUPPORTED_FORMAT_VERSIONS = (1,)

# The columns each trainer reads; metadata columns (signal, user_id, ...) stay in the build folder.
TRAINING_COLUMNS = {
    "sft": ["messages"],
    "dpo": ["prompt", "chosen", "rejected"],
    "kto": ["prompt", "completion", "label"],
}


class BuildError(ValueError):
    """A build folder that cannot feed this run; names the folder and what is wrong."""


@dataclass(frozen=True)
class DataSource:
    path: Path
    weight: float = 1.0


@dataclass
class CheckedBuild:
    source: DataSource
    manifest: dict[str, Any]
    manifest_sha256: str

    def lineage(self, kind: str) -> dict[str, Any]:
        return {
            "path": str(self.source.path),
            "manifest_sha256": self.manifest_sha256,
            "weight": self.source.weight,
            "kind": kind,
            "examples": self.manifest.get("examples", {}).get(kind),
        }


def parse_data_sources(data: list[Any]) -> list[DataSource]:
    """Recipe `data` entries (a path, `PATH:WEIGHT`, or `{path, weight}`) as sources."""
    if not data:
        raise BuildError("no training data: set `data` in the recipe (or --data BUILD_DIR) to a `flywheel data build` folder")
    sources = []
    for entry in data:
        if isinstance(entry, dict):
            unknown = set(entry) - {"path", "weight"}
            if "path" not in entry or unknown:
                raise BuildError(f"data entry {entry!r}: expected a mapping with `path` and optional `weight`")
            path, weight = entry["path"], entry.get("weight", 1.0)
        else:
            path, weight = str(entry), 1.0
            head, sep, tail = path.rpartition(":")
            if sep and head:
                try:
                    path, weight = head, float(tail)
                except ValueError:
                    pass  # a colon that is part of the path
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            raise BuildError(f"data entry {entry!r}: weight must be a number") from None
        if weight <= 0:
            raise BuildError(f"data entry {entry!r}: weight must be positive")
        sources.append(DataSource(Path(path), weight))
    return sources


def check_build(source: DataSource, kind: str) -> CheckedBuild:
    """The manifest says this folder is a dataset build that holds `kind` examples; or a BuildError saying why not."""
    manifest_path = source.path / "manifest.json"
    if not manifest_path.is_file():
        raise BuildError(f"{source.path}: no manifest.json; expected a folder written by `flywheel data build`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise BuildError(f"{manifest_path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("kind") != BUILD_KIND:
        raise BuildError(f"{manifest_path}: kind is {manifest.get('kind')!r}, expected {BUILD_KIND!r}")
    if manifest.get("format_version") not in SUPPORTED_FORMAT_VERSIONS:
        raise BuildError(
            f"{manifest_path}: format_version {manifest.get('format_version')!r} is not one this trainer reads "
            f"({', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))})"
        )
    counts = (manifest.get("examples") or {}).get(kind) or {}
    available = [k for k, v in (manifest.get("examples") or {}).items() if v and v.get("train")]
    if not counts.get("train"):
        raise BuildError(
            f"{source.path}: holds no {kind.upper()} training examples (manifest examples.{kind}: {counts or None}; "
            f"it has: {', '.join(available) or 'none'}); a {kind.upper()} run needs a build with {kind} data"
        )
    if not (source.path / kind).is_dir():
        raise BuildError(f"{source.path}: manifest lists {kind} examples but the folder {source.path / kind} is missing")
    expected = ((manifest.get("outputs") or {}).get(kind) or {}).get("sha256")
    if expected and data_files_sha256(source.path / kind) != expected:
        raise BuildError(
            f"{source.path / kind}: its data files no longer match the sha256 in {manifest_path} "
            f"(outputs.{kind}); the folder changed after it was built: rebuild it"
        )
    return CheckedBuild(source, manifest, sha256_file(manifest_path))


def data_files_sha256(dataset_dir: Path) -> str:
    """The build's hash of a DatasetDict folder: its Arrow data files (as `data.build` computes it).

    `datasets` cache files (`cache-*.arrow`) that another tool's `.map()` may have left beside the data do not count.
    """
    hashes = file_hashes(dataset_dir, "**/*.arrow")
    return sha256_json({k: v for k, v in hashes.items() if not Path(k).name.startswith("cache-")})


def load_training_data(data: list[Any], kind: str, seed: int, with_test: bool = True):
    """Check every build folder, load its `kind` splits and mix them by weight.

    Returns (train, test or None, [checked builds]). A weight w means each row of that folder is seen w times per
    epoch: whole copies plus a seeded sample for the fraction, so weight 1 everywhere is a plain concatenation.
    """
    from datasets import concatenate_datasets, load_from_disk

    builds = [check_build(source, kind) for source in parse_data_sources(data)]
    train_parts, test_parts = [], []
    for build in builds:
        # In memory: TRL's tokenising `.map()` would otherwise write cache files into the data stage's folder.
        dataset_dict = load_from_disk(str(build.source.path / kind), keep_in_memory=True)
        if "train" not in dataset_dict:
            raise BuildError(f"{build.source.path / kind}: no `train` split (has: {', '.join(dataset_dict)})")
        train = _training_columns(dataset_dict["train"], kind, build.source.path)
        train_parts.extend(_weighted(train, build.source.weight, seed))
        if with_test and "test" in dataset_dict and len(dataset_dict["test"]):
            test_parts.append(_training_columns(dataset_dict["test"], kind, build.source.path))
    train = concatenate_datasets(train_parts)
    if len(builds) > 1 or any(b.source.weight != 1.0 for b in builds):
        # Mixed or repeated rows: interleave them. A single build keeps its own (already seeded) order.
        train = train.shuffle(seed=seed)
    test = concatenate_datasets(test_parts) if test_parts else None
    return train, test, builds


def _training_columns(dataset, kind: str, where: Path):
    missing = [c for c in TRAINING_COLUMNS[kind] if c not in dataset.column_names]
    if missing:
        raise BuildError(f"{where / kind}: missing column(s) {', '.join(missing)} for {kind.upper()}")
    return dataset.select_columns(TRAINING_COLUMNS[kind])


def _weighted(dataset, weight: float, seed: int) -> list:
    whole, fraction = int(weight), weight - int(weight)
    parts = [dataset] * whole
    n_extra = round(fraction * len(dataset))
    if n_extra:
        parts.append(dataset.shuffle(seed=seed).select(range(n_extra)))
    return parts
