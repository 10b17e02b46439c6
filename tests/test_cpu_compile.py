"""results/bench/cpu_compile.json (benchmarks/cpu_compile.py): the README quotes the recorded measurement."""

from conftest import bench_record_and_readme


def test_the_readme_quotes_the_recorded_compile_measurement():
    record, said = bench_record_and_readme("cpu_compile.json", "On a CPU, `train.compile` pays")
    for quoted in (f"--config {record['config']}", f"{record['compiled']['images_per_second']:.0f} images/s compiled",
                   f"against {record['eager']['images_per_second']:.0f} eagerly", f"({record['speedup']:.2f} times",
                   f"{record['threads']} threads of an {record['cpu']}", f"{record['compile_seconds']:.0f} s of compiling",
                   f"above {record['pays_above_seconds']:.0f} s"):
        assert quoted in said, quoted
    assert record["compiled"]["images_per_second"] > record["eager"]["images_per_second"]  # else it would not pay
