"""The aarch64 NEON kernels (native/cpu/simd_neon.c, q8_neon.c, q8_dotprod.c) against the scalar
ones, bit for bit, on this (any) machine: tests/native/neon_check.c and the library's sources
cross-compiled for aarch64 and run under qemu-aarch64, on a CPU with SDOT (level 2, neon-dotprod)
and one without (level 2 falls back to plain NEON). Needs aarch64-linux-gnu-gcc and qemu-aarch64
(Debian: gcc-aarch64-linux-gnu, qemu-user)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CC, QEMU = "aarch64-linux-gnu-gcc", "qemu-aarch64"

pytestmark = pytest.mark.skipif(
    shutil.which(CC) is None or shutil.which(QEMU) is None,
    reason=f"{CC} and {QEMU} are needed to check the aarch64 NEON kernels (apt: gcc-aarch64-linux-gnu qemu-user)",
)


def _setup_cflags() -> list[str]:
    """setup.py's CFLAGS (the library's build flags, -ffp-contract=off among them)."""
    for node in ast.parse((ROOT / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "CFLAGS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no CFLAGS")


@pytest.fixture(scope="module")
def neon_check(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("neon")
    sources = sorted((ROOT / "native" / "cpu").glob("*.c")) + [ROOT / "tests" / "native" / "neon_check.c"]
    flags = [*_setup_cflags(), "-Werror=implicit-function-declaration", f"-I{ROOT / 'native' / 'cpu'}"]

    def compile_one(src: Path) -> Path:
        obj = out / f"{src.stem}.o"
        subprocess.run([CC, *flags, "-c", str(src), "-o", str(obj)], check=True, capture_output=True, text=True)
        return obj

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        objects = list(pool.map(compile_one, sources))
    exe = out / "neon_check"
    # static: qemu needs no aarch64 sysroot (-L) to run it
    subprocess.run([CC, "-static", *map(str, objects), "-o", str(exe), "-lm", "-lpthread"], check=True, capture_output=True, text=True)
    return exe


@pytest.mark.parametrize("cpu,level2", [("max", "neon-dotprod"), ("cortex-a57", "neon")])
def test_neon_kernels_are_bit_identical_to_scalar(neon_check, cpu, level2):
    """Every kernel that NEON (level 1) and NEON + SDOT (level 2) put in the table gives the scalar
    kernels' bits, for batches of 1..4 tokens, odd row counts and several k, and so does every
    matrix product (fused and tiled, f32 / q8 / q8x2 activations); a57 has no SDOT."""
    proc = subprocess.run([QEMU, "-cpu", cpu, str(neon_check)], capture_output=True, text=True, timeout=120)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "level 1: neon\n" in proc.stdout
    assert f"level 2: {level2}\n" in proc.stdout
    assert ("not available" in proc.stdout) == (level2 == "neon")
    assert proc.stdout.rstrip().endswith(" 0 mismatched")
    # the kernels a decode runs, each replaced by a NEON twin and checked (not left scalar)
    checked = {line.split(" ok (")[0].strip() for line in proc.stdout.splitlines() if " ok (" in line}
    assert checked >= {"dot", "dotn", "split", "kdot", "vdot q4_k", "vdot q5_k", "vdot q6_k", "vdot q8_0", "quant",
                       "qdot q8_0", "qdot q4_k", "qdot q5_k", "qdot q6_k", "matmul q4_k f32", "matmul q6_k q8"}
