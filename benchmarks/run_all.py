"""Run every benchmark in turn (`make bench`); each prints its own measured figures."""
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

for script, arguments in (("bench_prepare.py", []), ("bench_train.py", [])):
    print(f"== {script} {' '.join(arguments)}", flush=True)
    subprocess.run([sys.executable, str(HERE / script), *arguments], check=True)
