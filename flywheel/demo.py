"""One full turn of the flywheel on a base model the project builds (tiny or SmolLM2) and simulated users.

Read top to bottom, this is the whole loop a user runs on their own model and logs:

1. build (or reuse) the base model (the tiny one by default, or SmolLM2-135M-Instruct: `--base`);
2. period 0: simulated users work with the base model, their behaviour lands in a capture log;
3. build SFT/DPO/KTO datasets from the log and freeze the held-out part as the eval set;
4. train SFT, then DPO continuing the SFT adapter;
5. gate the DPO adapter against the base; promote it when it passes;
6. period 1: the same population of users works with the promoted adapter (another seed);
7. the production monitor compares the two periods;
8. a summary on the terminal, `summary.json`, and `index.html` (flywheel/report_page.py): what happened in one
   sentence and one chart, the gate, real replies before and after, and every artefact.

Every step calls the same public function its CLI subcommand calls, and reads only what the step before wrote.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from flywheel.files import write_json_atomic

REPO_ROOT = Path(__file__).resolve().parent.parent
RECIPES = REPO_ROOT / "recipes" / "tiny"
# Per base model: its recipe folder, and the general-text set of its gate (None: eval/general/, real English).
BASE_RECIPES = {"tiny": RECIPES, "smollm2-135m-instruct": REPO_ROOT / "recipes" / "smollm2-135m-instruct"}
GENERAL_SETS = {"tiny": RECIPES / "general.jsonl", "smollm2-135m-instruct": None}
ALIAS = "assistant"
METRICS = ("edit_cost", "edit_rate", "regen_rate", "abandon_rate")

console = Console()


@dataclass
class DemoSettings:
    base: str = "tiny"  # a name `flywheel base-model` builds
    size: str = "default"  # the tiny model's size
    users: int = 50
    turns: int = 15
    seed: int = 0
    # Held-out share of users. The gate's tests are over users, so what it can detect depends on how many are held
    # out: 15 of 50 (8 of 40 left it able to see only effects of more than a standard deviation).
    test_fraction: float = 0.3
    # The simulated users' preference family (simulation.preferences.FAMILIES).
    preferences: str = "house"
    # Recipe keys on top of recipes/tiny/{sft,dpo}.yaml.
    sft_overrides: dict[str, Any] = field(default_factory=dict)
    dpo_overrides: dict[str, Any] = field(default_factory=dict)
    # Gate configuration on top of eval/config.py's defaults (empty: the defaults, as a user's gate runs).
    gate_config: dict[str, Any] = field(default_factory=dict)
    # Simulation settings (simulation.simulate.SimConfig fields) for both periods.
    sim_config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_size(cls, size: str, users: int | None = None, turns: int | None = None, seed: int = 0) -> "DemoSettings":
        if size == "test":
            # The smallest settings (the test suite's) hold out a few dozen turns: too few to show a generation
            # gain with significance, so there the gate asks generation only not to be worse (non-inferiority);
            # every other check, and the default demo, keep the defaults.
            # They also give SFT a fifth of the default's examples, so it takes twice the recipe's epochs (with the
            # recipe's 5, generation was not shown non-inferior: interval [-0.087, +0.051] against 0.02).
            s = cls(size="test", users=24, turns=6, seed=seed, test_fraction=0.3,
                    sft_overrides={"num_train_epochs": 10},
                    gate_config={"min_items": 10, "checks": {"generation": {"require_improvement": False}}})
        else:
            s = cls(size=size, seed=seed)
        return s._with(users, turns)

    @classmethod
    def for_base(cls, base: str, size: str = "default", users: int | None = None, turns: int | None = None,
                 seed: int = 0) -> "DemoSettings":
        if base == "tiny":
            return cls.for_size(size, users=users, turns=turns, seed=seed)
        if base not in BASE_RECIPES:
            raise ValueError(f"unknown base {base!r}; choose one of {', '.join(BASE_RECIPES)}")
        # A real model's replies are long free English: bf16 autocast halves generation time on a CPU with AMX,
        # and 24 users x 10 turns keep a period within minutes on 2 cores (docs/simulation.md).
        s = cls(base=base, users=24, turns=10, seed=seed, test_fraction=0.25,
                sim_config={"autocast_bf16": True, "topic_judge": "request", "batch_size": 32})
        return s._with(users, turns)

    def _with(self, users: int | None, turns: int | None) -> "DemoSettings":
        s = self
        if users is not None:
            s.users = users
        if turns is not None:
            s.turns = turns
        return s


class _Steps:
    """Numbered progress lines with the time each step took."""

    def __init__(self, total: int):
        self.total = total
        self.n = 0
        self.timings: dict[str, float] = {}
        self._t0 = time.perf_counter()
        self._name: str | None = None

    def start(self, name: str) -> None:
        self._finish()
        self.n += 1
        self._name = name
        self._t0 = time.perf_counter()
        console.rule(f"[bold]step {self.n}/{self.total}: {name}")

    def _finish(self) -> None:
        if self._name is not None:
            took = time.perf_counter() - self._t0
            self.timings[self._name] = round(took, 1)
            console.print(f"[dim]  {self._name}: {took:.1f} s")

    def done(self) -> None:
        self._finish()
        self._name = None


def _prepare_out(out: Path) -> None:
    """The demo owns its folder: a previous demo's folder is replaced, anything else is refused."""
    if out.exists() and any(out.iterdir()):
        if not (out / "summary.json").exists() and not (out / ".flywheel-demo").exists():
            raise SystemExit(f"{out}: exists and is not a demo folder; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ".flywheel-demo").write_text("this folder is written by `flywheel demo` and replaced by the next run\n")


def run_demo(out: str | Path, settings: DemoSettings | None = None) -> dict[str, Any]:
    from data.build import build_datasets
    from eval.freeze import freeze
    from eval.gate import run_gate
    from flywheel.report_page import write_demo_page
    from serving.monitor import monitor
    from serving.registry import PromotionRefused, promote
    from simulation.base_models import build_base_model
    from simulation.simulate import SimConfig, simulate
    from training.api import train

    settings = settings or DemoSettings()
    out = Path(out).resolve()
    _prepare_out(out)
    steps = _Steps(total=8)
    paths = {
        "log_0": out / "logs" / "period0.jsonl",
        "log_1": out / "logs" / "period1.jsonl",
        "build": out / "datasets" / "period0",
        "eval_set": out / "eval-sets" / "period0",
        "sft": out / "adapters" / "sft",
        "dpo": out / "adapters" / "dpo",
        "gate": out / "gate",
        "registry": out / "registry",
        "monitor": out / "monitor",
    }

    steps.start(f"{settings.base} base model")
    model = Path(build_base_model(settings.base, size=settings.size, show_progress=True))
    console.print(f"base model: {model}")
    recipes = BASE_RECIPES[settings.base]
    # The seed draws the population too: a fresh seed is fresh users, not the same users behaving anew.
    sim_config = SimConfig.from_file(None, {**settings.sim_config, "population_seed": settings.seed,
                                            "preferences": settings.preferences})

    steps.start("period 0: simulated users on the base model")
    sim_0 = simulate(model, paths["log_0"], adapter=None, users=settings.users, turns=settings.turns,
                     seed=settings.seed, config=sim_config, show_progress=True)

    steps.start("datasets and the frozen eval set")
    manifest = build_datasets([str(paths["log_0"])], paths["build"], test_fraction=settings.test_fraction)
    general = GENERAL_SETS[settings.base]
    eval_set = freeze(paths["build"], paths["eval_set"], **({} if general is None else {"general": general}),
                      gate_config=settings.gate_config or None)
    for warning in eval_set["warnings"]:
        console.print(f"[yellow]warning: {warning}")

    steps.start("training: SFT, then DPO from the SFT adapter")
    common = {"model_name_or_path": str(model), "data": str(paths["build"])}
    sft = train("sft", recipes / "sft.yaml", {**common, "output_dir": str(paths["sft"]), **settings.sft_overrides})
    dpo = train("dpo", recipes / "dpo.yaml", {**common, "output_dir": str(paths["dpo"]), "sft_adapter": str(sft),
                                              **settings.dpo_overrides})

    steps.start("gate: the DPO adapter against the frozen base")
    report = run_gate(dpo, paths["eval_set"], paths["gate"], base=str(model), config=settings.gate_config or None)
    promoted: dict[str, Any] | None = None
    if report["decision"] == "pass":
        try:
            promoted = promote(dpo, paths["gate"], ALIAS, registry=paths["registry"])
        except PromotionRefused as exc:
            console.print(f"[bold red]PROMOTION REFUSED[/]: {exc}")
    if promoted is None:
        console.print("[bold red]" + "=" * 78)
        console.print("[bold red]THE GATE DID NOT PASS: nothing was promoted; period 1 runs on the base model.")
        for reason in report.get("reasons", []):
            console.print(f"[red]  - {reason}")
        console.print("[bold red]" + "=" * 78)
    else:
        console.print(f"[bold green]promoted {promoted['name']} as alias '{ALIAS}'")

    steps.start("period 1: the same users on the promoted adapter")
    adapter_1 = Path(promoted["path"]) if promoted else None
    sim_1 = simulate(model, paths["log_1"], adapter=adapter_1, users=settings.users, turns=settings.turns,
                     seed=settings.seed + 1, adapter_version=promoted["name"] if promoted else None,
                     config=sim_config, show_progress=True)

    steps.start("monitor: period 0 against period 1")
    # One report over both logs compares the model versions (and alerts); one per log gives each period's figures
    # even when both periods ran the same version (a failed gate).
    mon = monitor([str(paths["log_0"]), str(paths["log_1"])], paths["monitor"])
    mon_periods = [monitor([str(paths[f"log_{i}"])], paths["monitor"] / f"period{i}") for i in (0, 1)]

    steps.start("summary")
    summary = _summary(settings, model, manifest, eval_set, sft, dpo, report, promoted, mon, mon_periods,
                       sim_0, sim_1, paths)
    steps.done()
    summary["timings_s"] = steps.timings
    write_json_atomic(out / "summary.json", summary)
    write_demo_page(summary, out, [summary["period_0"], summary["period_1"]], [paths["log_0"], paths["log_1"]])
    _print_summary(summary)
    console.print(f"\nreport: {out / 'index.html'}")
    return summary


def _period_figures(mon: dict[str, Any], label: str) -> dict[str, Any]:
    version = mon["versions"][label]
    figures = {m: version[m] for m in METRICS}
    figures["intervals"] = {m: version["intervals"][m] for m in METRICS}
    figures["turns"] = version["turns"]
    figures["users"] = version["users"]
    figures["model"] = {"base": version["base"], "adapter": version["adapter"]}
    figures["version_label"] = label
    return figures


def _version_label(mon: dict[str, Any], adapter_name: str | None) -> str:
    for label, v in mon["versions"].items():
        if (v.get("adapter") or None) == adapter_name:
            return label
    raise KeyError(f"monitor report has no version with adapter {adapter_name!r}: {list(mon['versions'])}")


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _summary(settings, model, manifest, eval_set, sft, dpo, report, promoted, mon, mon_periods, sim_0, sim_1,
             paths) -> dict:
    adapter_name_1 = promoted["name"] if promoted else None
    period_0 = _period_figures(mon_periods[0], _version_label(mon_periods[0], None))
    period_1 = _period_figures(mon_periods[1], _version_label(mon_periods[1], adapter_name_1))
    checks = {
        name: {k: c.get(k) for k in ("passed", "role", "base", "adapter", "diff", "value", "interval", "mde", "n", "n_users",
                                     "method")}
        for name, c in report.get("checks", {}).items()
    }
    return {
        "settings": asdict(settings),
        "base_model": str(model),
        "datasets": {"examples": manifest.get("examples"), "drops": manifest.get("drops"),
                     "events": manifest.get("events")},
        "eval_set": {"path": str(paths["eval_set"]), "sha256": eval_set.get("sha256"),
                     "counts": eval_set.get("counts")},
        "training": {
            "sft": {"path": str(sft), "metrics": _read_json(Path(sft) / "lineage.json").get("metrics")},
            "dpo": {"path": str(dpo), "metrics": _read_json(Path(dpo) / "lineage.json").get("metrics")},
        },
        "gate": {"decision": report["decision"], "decision_rule": report.get("decision_rule"),
                 "reasons": report.get("reasons", []), "warnings": report.get("warnings", []), "checks": checks,
                 "report": str(paths["gate"] / "gate_report.json")},
        "promotion": ({"alias": ALIAS, "version": promoted["name"], "path": promoted["path"],
                       "adapter_sha256": promoted["adapter"]["adapter_sha256"], "registry": str(paths["registry"])}
                      if promoted else None),
        "simulation": {"period_0": sim_0, "period_1": sim_1},
        "period_0": period_0,
        "period_1": period_1,
        "change": {m: _relative_change(period_0[m], period_1[m]) for m in METRICS},
        "monitor": {"path": str(paths["monitor"]), "alert": mon.get("alert"), "summary": mon.get("summary")},
        "artefacts": {k: str(v) for k, v in paths.items()},
    }


def _relative_change(before: float, after: float) -> float | None:
    return None if not before else (after - before) / before


def _fmt(value: float, interval: list[float] | None) -> str:
    if interval:
        return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"
    return f"{value:.3f}"


def _print_summary(summary: dict[str, Any]) -> None:
    ex = summary["datasets"]["examples"] or {}
    table = Table(title="datasets (train / test)")
    for kind in ("sft", "dpo", "kto"):
        table.add_column(kind)
    table.add_row(*[f"{ex.get(k, {}).get('train', 0)} / {ex.get(k, {}).get('test', 0)}" for k in ("sft", "dpo", "kto")])
    console.print(table)

    table = Table(title="training (final metrics)")
    table.add_column("stage")
    table.add_column("metrics")
    for stage in ("sft", "dpo"):
        metrics = summary["training"][stage]["metrics"] or {}
        shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        table.add_row(stage, ", ".join(f"{k}={v:.4g}" for k, v in list(shown.items())[:6]))
    console.print(table)

    gate = summary["gate"]
    colour = "green" if gate["decision"] == "pass" else "red"
    table = Table(title=f"gate: [bold {colour}]{gate['decision'].upper()}")
    for col in ("check", "passed", "base", "adapter", "diff", "interval", "n"):
        table.add_column(col)
    for name, c in gate["checks"].items():
        table.add_row(name, str(c["passed"]), _num(c["base"]), _num(c["adapter"]), _num(c["diff"]),
                      _num(c["interval"]), str(c["n"]))
    console.print(table)

    table = Table(title="users: period 0 (base) against period 1 (promoted adapter), 95% intervals clustered by user")
    for col in ("metric", "period 0", "period 1", "change"):
        table.add_column(col)
    p0, p1 = summary["period_0"], summary["period_1"]
    for m in METRICS:
        change = summary["change"][m]
        table.add_row(m, _fmt(p0[m], p0["intervals"][m]), _fmt(p1[m], p1["intervals"][m]),
                      "n/a" if change is None else f"{change:+.0%}")
    console.print(table)


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v):
        return "[" + ", ".join(f"{x:.3g}" for x in v) + "]"
    return "" if v is None else str(v)
