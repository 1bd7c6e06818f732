"""The wheel folder that lets benchmarks/gpu_check.py run its TRL side on the GPU test machine.

That machine has torch, transformers, accelerate, pandas, pyarrow and the rest of TRL's needs, but
not ``trl``, ``datasets``, ``dill`` or ``multiprocess``, and cannot reach a package index. This
downloads those four, at the versions installed here (the TRL the parity tests ran against), as
wheels for the machine's Python (3.12, x86-64 Linux) into ``.whl`` (ignored by git), and prints
their sizes: what travels with the repository (64 MiB in all).

    python benchmarks/trl_wheels.py                      # -> .whl/, about 1.8 MB
    python benchmarks/trl_wheels.py --also pyarrow       # when the machine's pyarrow is too old for datasets

Then, in the device run (``carry: [".whl"]``), before the check:

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
        && PYTHONPATH=/tmp/site python benchmarks/gpu_check.py
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What TRL and datasets need beyond the GPU machine's image (device tool's KINDS.md package list).
MISSING = ("trl", "datasets", "dill", "multiprocess")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")


def pinned(names) -> list[str]:
    """``name==version`` of each package as installed here."""
    out = []
    for name in names:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            sys.exit(f"trl_wheels: {name} is not installed here; install it (the version to carry) first")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / ".whl"), help="wheel folder (default: .whl in the repository)")
    ap.add_argument("--also", nargs="*", default=[], help="more installed packages to carry (e.g. pyarrow)")
    ap.add_argument("--python-version", default="3.12", help="the GPU machine's Python")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    specs = pinned([*MISSING, *a.also])
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
           a.python_version, "--implementation", "cp", *(f"--platform={p}" for p in PLATFORMS), "-d", str(out), *specs]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"trl_wheels: pip download failed:\n{r.stderr[-2000:]}")
    wheels = sorted(out.glob("*.whl"))
    wanted = {s.split("==")[0].replace("-", "_").lower() for s in specs}
    total = 0
    for w in wheels:
        if w.name.split("-")[0].lower() in wanted:
            size = w.stat().st_size
            total += size
            print(f"{size / 2**20:8.2f} MiB  {w.name}")
    print(f"{total / 2**20:8.2f} MiB  in {out} ({len(specs)} packages: {' '.join(specs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
