"""The README's results section quotes the records: each figure it gives must be the one the records hold."""

import csv
import json

from conftest import ROOT


def _results_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index("## Results"):text.index("## Data")]


def _rows(name: str) -> list[dict]:
    with open(ROOT / "results" / name) as f:
        return list(csv.DictReader(f))


def test_the_results_section_quotes_the_recorded_runs():
    section = _results_section()
    (seeds,) = [r for r in _rows("seeds_table.csv") if r["model"] == "best"]
    finished = [r for r in _rows("runs_table.csv") if r["model"] == "best" and r["status"] == "finished"]
    pct = lambda x: f"{float(x) * 100:.2f}"  # noqa: E731
    assert f"| {int(seeds['params']):,} | {seeds['epochs']} | {seeds['seeds']} |" in section
    assert f"{pct(seeds['test_acc_mean'])} ± {pct(seeds['test_acc_std'])}% " \
           f"({', '.join(pct(r['test_acc']) for r in finished)})" in section
    assert f"{pct(seeds['test_acc_tta_mean'])} ± {pct(seeds['test_acc_tta_std'])}% " \
           f"({', '.join(pct(r['test_acc_tta']) for r in finished)})" in section
    assert f"{float(seeds['train_seconds_mean']):.0f} s of" in section
    walls = sorted(round(float(r["wall_seconds"])) for r in finished)
    assert f"{walls[0]}-{walls[-1]} s wall" in section


def test_the_results_section_quotes_the_stopped_run_and_the_speed_race():
    section = _results_section()
    (stopped,) = [r for r in _rows("runs_table.csv") if r["status"] == "time_limit"]
    history = _rows(f"runs/{stopped['run']}/history.csv")
    last = [r for r in history if r["test_acc"]][-1]
    assert f"after epoch {stopped['epochs']}" in section and f"{float(last['test_acc']) * 100:.2f}%" in section
    speed = json.loads((ROOT / "results" / "bench" / "speed94.json").read_text())
    ours, theirs = speed["ours"], speed["airbench"]
    assert f"{speed['n_runs']} runs a" in section and f"ratio of {speed['ratio']:.3f}" in section
    assert f"`fast94` {ours['seconds_mean']:.3f} s at {ours['acc_mean'] * 100:.2f}%" in section
    assert f"airbench94 {theirs['seconds_mean']:.3f} s at {theirs['acc_mean'] * 100:.2f}%" in section
    missed = all(side["acc_mean"] * 100 < speed["target"] for side in (ours, theirs))
    assert ("neither reached 94% on average" in " ".join(section.split())) == missed  # a race, not a time to 94%


def test_a_preset_named_beside_a_recorded_result_says_how_it_differs_from_the_record():
    """A recorded result is credited to the record's own config.yaml and commit; where the section names the
    preset of the same name, every setting in which it differs from the record (seed, epochs, data aside) is
    named there, so that nobody reruns the preset believing they rerun the result."""
    import yaml

    from cifar_resnet.config import Config, config_to_dict, load_config
    from cifar_resnet.reporting.recipe_text import recipe_changes

    section = _results_section()
    checked = 0
    for config_path in sorted((ROOT / "results" / "runs").glob("*/config.yaml")):
        recorded = yaml.safe_load(config_path.read_text())
        preset = ROOT / "configs" / f"{recorded.get('name')}.yaml"
        if f"`configs/{preset.name}`" not in section or not preset.is_file():
            continue
        if f"`results/runs/{config_path.parent.name}/config.yaml`" in section:
            commit = json.loads((config_path.parent / "metrics.json").read_text())["git_commit"][:7]
            assert commit in section, f"the record's commit {commit} is not named"
        changes = recipe_changes(recorded, config_to_dict(load_config(preset)), config_to_dict(Config()))
        missing = [key for key in changes if f"`{key}`" not in section]
        assert not missing, f"configs/{preset.name} differs from results/runs/{config_path.parent.name} in {missing}, unsaid"
        checked += 1
    assert checked, "no recorded result is named beside its preset"
    assert "| `configs/" not in section, "a results row credits a preset instead of the record's config.yaml"
