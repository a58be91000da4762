"""bench/gpu_guidance.py --smoke: the GPU benchmark's code path, on the CPU with tiny models."""
import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu_guidance.py"


def test_gpu_benchmark_smoke_run_times_guidance_and_writes_its_table(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_guidance", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "benchmarks_gpu.md"
    rows = bench.main(["--smoke", "--models", "sd-turbo", "--out", str(out)])
    assert [(r["model"], r["variant"]) for r in rows] == [("sd-turbo", "default")]
    row = rows[0]
    assert row["step_ms"] > 0 and row["run_s"] > 0 and row["peak_gb"] is None
    assert row["gain"] >= 0  # the best iterate is kept, so guidance never ends below the baseline
    text = out.read_text()
    assert "| sd-turbo | default |" in text and "Device: " in text and "--smoke" in text
