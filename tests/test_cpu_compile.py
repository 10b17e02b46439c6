"""results/bench/cpu_compile.json (benchmarks/cpu_compile.py): the README quotes the recorded measurement."""

import json

import pytest

from conftest import ROOT


def test_the_readme_quotes_the_recorded_compile_measurement():
    path = ROOT / "results" / "bench" / "cpu_compile.json"
    if not path.is_file():
        pytest.skip("no compile measurement recorded in results/bench/")
    record = json.loads(path.read_text())
    readme = (ROOT / "README.md").read_text()
    said = " ".join(readme[readme.index("On a CPU, `train.compile` pays"):].split("\n\n")[0].split())
    for quoted in (f"--config {record['config']}", f"{record['compiled']['images_per_second']:.0f} images/s compiled",
                   f"against {record['eager']['images_per_second']:.0f} eagerly", f"({record['speedup']:.2f} times",
                   f"{record['threads']} threads of an {record['cpu']}", f"{record['compile_seconds']:.0f} s of compiling",
                   f"above {record['pays_above_seconds']:.0f} s"):
        assert quoted in said, quoted
    assert record["compiled"]["images_per_second"] > record["eager"]["images_per_second"]  # else it would not pay
