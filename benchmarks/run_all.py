"""Run every benchmark in turn (`make bench`); each prints its own measured figures.

    python benchmarks/run_all.py [--quick]

In order: data preparation (time and peak memory, ours and the published way), one training step
of the model against the published model, training throughput by loop (ours and the published
DataLoader loop), by precision and compilation, the evaluation of the test split against the
published evaluate.py run once per protocol, and whole processes of `iivformer train` (fp32 and
bf16) against the published main.py. `--quick` runs fewer repeats, and the last on the tiny set.
Figures measured on the project's machines are kept, with their commands, in benchmarks/RESULTS.md;
on a CUDA machine, `bash benchmarks/gpu.sh` also runs the CUDA tests.
"""
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUICK = "--quick" in sys.argv[1:]
BENCHMARKS = (
    ("bench_prepare.py", []),
    ("bench_model_step.py", ["--repeats", "3" if QUICK else "5"]),
    ("bench_train.py", ["--repeats", "1" if QUICK else "2"]),
    ("bench_precision.py", ["--epochs", "2" if QUICK else "3"]),
    ("bench_evaluate.py", ["--repeats", "1" if QUICK else "2"]),
    ("bench_end_to_end.py", ["--preset", "tiny" if QUICK else "small", "--ours", "", "--precision bf16"]),
)

began = time.perf_counter()
for script, arguments in BENCHMARKS:
    print(f"== {script} {' '.join(arguments)}", flush=True)
    subprocess.run([sys.executable, str(HERE / script), *arguments], check=True)
print(f"== all benchmarks in {time.perf_counter() - began:.0f} s")
