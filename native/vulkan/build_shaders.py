"""The Vulkan kernels: GLSL compute shaders (native/vulkan/shaders/) compiled with glslc to the
SPIR-V shipped in native/vulkan/spirv/, one file per kernel of native/cuda/kernels/ (same name,
same arguments as push constants, same launch), plus variants of some kernels: `<kernel>.sg.spv`,
the subgroup-shuffle build of those that sum over 32-lane warps, for devices with subgroups of
>= 32 invocations; `<kernel>.cpu.spv`, the matrix products' build for CPU drivers (one invocation
per weight row, no barrier).

    python3 -m mtprun.native.vulkan.build_shaders          # rebuild spirv/ and its manifest
    python3 -m mtprun.native.vulkan.build_shaders --check  # exit 1 if spirv/ is stale

The manifest (spirv/manifest.json) holds a sha256 over the shader sources and each kernel's
SPIR-V sha256. Every float add, subtract, multiply and divide of every kernel must carry
NoContraction (GLSL `precise`): the build fails otherwise, so no driver may fuse or reorder the
arithmetic that keeps results exact and batch-invariant."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from mtprun.native.gpu import CONV_WIDTHS, DELTA_DIMS, MM_BATCHES, TYPES

HERE = Path(__file__).resolve().parent
SHADER_DIR = HERE / "shaders"
SPIRV_DIR = HERE / "spirv"
MANIFEST = SPIRV_DIR / "manifest.json"
GLSLC_FLAGS = ("--target-env=vulkan1.2", "-O", "-Werror", "-fshader-stage=compute")


class Kernel(NamedTuple):
    source: str  # file in shaders/
    defines: tuple[str, ...]  # -D arguments, e.g. ("MM", "NB=4", "WT=12")
    variants: tuple[str, ...] = ()  # also built as <name>.<variant>.spv with VARIANT_DEFINES[variant]


# variant -> the define it is built with
VARIANT_DEFINES = {"sg": "SUBGROUP", "cpu": "CPU_DRIVER"}


# ggml weight types: kernel suffix -> the WT define of quants.glsl (the ggml type id)
WEIGHT_TYPES = {suffix: ggml_type for ggml_type, (suffix, _, _) in TYPES.items()}


def _table() -> dict[str, Kernel]:
    k: dict[str, Kernel] = {}
    for suffix, wt in WEIGHT_TYPES.items():
        for nb in MM_BATCHES:
            k[f"mm_{suffix}_{nb}"] = Kernel("matmul.comp", ("MM", f"NB={nb}", f"WT={wt}"), ("sg", "cpu"))
        k[f"mmid_{suffix}"] = Kernel("matmul.comp", ("MMID", f"WT={wt}"), ("sg", "cpu"))
        k[f"get_rows_{suffix}"] = Kernel("matmul.comp", ("GET_ROWS", f"WT={wt}"))
    for width in CONV_WIDTHS:
        k[f"ssm_conv_{width}"] = Kernel("recurrent.comp", ("SSM_CONV", f"K={width}"))
    for dim in DELTA_DIMS:
        k[f"delta_net_{dim}"] = Kernel("recurrent.comp", ("DELTA_NET", f"S={dim}"))
    k["norm_rows"] = Kernel("norm.comp", ())
    k["argmax_part"] = Kernel("argmax.comp", ("ARGMAX_PART",))
    k["argmax_rows"] = Kernel("argmax.comp", ("ARGMAX_ROWS",))
    k["binary"] = Kernel("elementwise.comp", ("BINARY",))
    k["unary"] = Kernel("elementwise.comp", ("UNARY",))
    k["swiglu"] = Kernel("elementwise.comp", ("SWIGLU",))
    k["copy_rows"] = Kernel("copy.comp", ())
    k["rope"] = Kernel("rope.comp", ())
    k["kv_write"] = Kernel("attention.comp", ("KV_WRITE",))
    k["attention"] = Kernel("attention.comp", ("ATTENTION",), ("sg",))
    k["moe_route"] = Kernel("moe.comp", ("MOE_ROUTE",))
    k["moe_combine"] = Kernel("moe.comp", ("MOE_COMBINE",))
    return k


KERNELS = _table()


def kernel_names() -> list[str]:
    return list(KERNELS)


def spirv_path(name: str, variant: str | None = None) -> Path:
    return SPIRV_DIR / f"{name}{'.' + variant if variant else ''}.spv"


def builds() -> list[tuple[str, str | None]]:
    """Every (kernel, variant or None) that is compiled and shipped."""
    return [(name, v) for name, k in KERNELS.items() for v in (None, *k.variants)]


def source_files() -> list[Path]:
    return sorted((p for p in SHADER_DIR.iterdir() if p.suffix in (".comp", ".glsl")), key=lambda p: p.name)


def source_hash() -> str:
    """sha256 over every shader source, in name order: name, NUL, length, NUL, content."""
    h = hashlib.sha256()
    for p in source_files():
        data = p.read_bytes()
        h.update(p.name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()


def load_manifest() -> dict:
    return json.loads(MANIFEST.read_text())


# -- loading: the float-controls modes a device may lack
# OpCapability and OpExecutionMode ids of the modes common.glsl declares (SPIR-V 1.4 float controls).
_OP_EXECUTION_MODE, _OP_CAPABILITY = 16, 17
_DENORM_PRESERVE = (4464, 4459)  # (capability, execution mode)
_INF_NAN_PRESERVE = (4466, 4461)


def spirv_code(name: str, variant: str | None = None, *, denorm_preserve: bool = True, inf_nan_preserve: bool = True) -> bytes:
    """A kernel's shipped SPIR-V for a device. Every kernel declares DenormPreserve 32 and
    SignedZeroInfNanPreserve 32 (IEEE float32 as CUDA computes it); pass False for a mode the
    device does not support (VkPhysicalDeviceVulkan12Properties.shaderDenormPreserveFloat32,
    .shaderSignedZeroInfNanPreserveFloat32) and the mode and its capability are taken out."""
    code = spirv_path(name, variant).read_bytes()
    drop = ([] if denorm_preserve else [_DENORM_PRESERVE]) + ([] if inf_nan_preserve else [_INF_NAN_PRESERVE])
    return strip_modes(code, drop) if drop else code


def strip_modes(spv: bytes, drop: list[tuple[int, int]]) -> bytes:
    """spv without the OpCapability / OpExecutionMode instructions of the (capability, mode) pairs."""
    caps, modes = {c for c, _ in drop}, {m for _, m in drop}
    words = struct.unpack(f"<{len(spv) // 4}I", spv)
    out = list(words[:5])
    i = 5
    while i < len(words):
        count, op = words[i] >> 16, words[i] & 0xFFFF
        inst = words[i : i + max(count, 1)]
        if not ((op == _OP_CAPABILITY and inst[1] in caps) or (op == _OP_EXECUTION_MODE and inst[2] in modes)):
            out.extend(inst)
        i += max(count, 1)
    return struct.pack(f"<{len(out)}I", *out)


# -- SPIR-V checks
_FLOAT_ARITH = {129: "OpFAdd", 131: "OpFSub", 133: "OpFMul", 136: "OpFDiv", 138: "OpFRem", 141: "OpFMod",
                142: "OpVectorTimesScalar", 143: "OpMatrixTimesScalar", 144: "OpVectorTimesMatrix",
                145: "OpMatrixTimesVector", 146: "OpMatrixTimesMatrix", 148: "OpDot"}
_OP_DECORATE, _NO_CONTRACTION = 71, 42


def uncontracted_ops(spv: bytes) -> list[str]:
    """The float arithmetic instructions of a SPIR-V module that lack NoContraction."""
    words = struct.unpack(f"<{len(spv) // 4}I", spv)
    if words[0] != 0x07230203:
        raise ValueError("not a little-endian SPIR-V module")
    exact, arith = set(), []
    i = 5
    while i < len(words):
        count, op = words[i] >> 16, words[i] & 0xFFFF
        if op == _OP_DECORATE and words[i + 2] == _NO_CONTRACTION:
            exact.add(words[i + 1])
        elif op in _FLOAT_ARITH:
            arith.append((words[i + 2], _FLOAT_ARITH[op]))
        i += max(count, 1)
    return [f"{name} %{rid}" for rid, name in arith if rid not in exact]


# -- compiling
def _glslc() -> str:
    exe = os.environ.get("GLSLC") or shutil.which("glslc")
    if not exe:
        raise SystemExit("glslc is not installed (Debian: apt-get install glslc; or the Vulkan SDK); set GLSLC to its path.")
    return exe


def _compile(exe: str, name: str, variant: str | None, out_dir: Path) -> str:
    """Compile one build of a kernel into out_dir; returns the problem, or ''."""
    kernel = KERNELS[name]
    out = out_dir / spirv_path(name, variant).name
    defines = [f"-D{d}" for d in kernel.defines + ((VARIANT_DEFINES[variant],) if variant else ())]
    # Relative paths from the shader directory: nothing of this machine's layout reaches the output.
    cmd = [exe, *GLSLC_FLAGS, *defines, kernel.source, "-o", str(out)]
    proc = subprocess.run(cmd, cwd=SHADER_DIR, capture_output=True, text=True)
    if proc.returncode != 0 or proc.stderr.strip():
        return proc.stderr.strip() or proc.stdout.strip() or f"glslc exited {proc.returncode}"
    bad = uncontracted_ops(out.read_bytes())
    if bad:
        return f"{len(bad)} float operations without NoContraction ({', '.join(bad[:4])}...)"
    return ""


def compile_all(out_dir: Path, jobs: int | None = None) -> dict:
    """Every kernel (and variant) into out_dir, and the manifest they make; raises
    SystemExit naming any kernel that fails to compile cleanly."""
    exe = _glslc()
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = builds()
    with ThreadPoolExecutor(max_workers=jobs or min(os.cpu_count() or 1, 8)) as pool:
        problems = list(pool.map(lambda b: _compile(exe, b[0], b[1], out_dir), todo))
    failed = [(spirv_path(n, v).stem, msg) for (n, v), msg in zip(todo, problems) if msg]
    if failed:
        for stem, msg in failed:
            print(f"--- {stem}:\n{msg}", file=sys.stderr)
        raise SystemExit(f"{len(failed)} Vulkan kernels failed to build: {', '.join(stem for stem, _ in failed)}.")

    def digest(name: str, variant: str | None = None) -> str:
        return hashlib.sha256((out_dir / spirv_path(name, variant).name).read_bytes()).hexdigest()

    kernels = {name: {"source": k.source, "defines": list(k.defines), "spv_sha256": digest(name),
                      "variants": {v: digest(name, v) for v in k.variants}}
               for name, k in KERNELS.items()}
    return {"source_sha256": source_hash(), "glslc_flags": list(GLSLC_FLAGS), "kernels": kernels}


def _manifest_text(manifest: dict) -> str:
    return json.dumps(manifest, indent=1, sort_keys=True) + "\n"


def build() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        manifest = compile_all(Path(tmp))
        SPIRV_DIR.mkdir(exist_ok=True)
        wanted = {spirv_path(n, v).name for n, v in builds()}
        for old in SPIRV_DIR.glob("*.spv"):
            if old.name not in wanted:
                old.unlink()
        for fname in sorted(wanted):
            data = (Path(tmp) / fname).read_bytes()
            dst = SPIRV_DIR / fname
            if not dst.exists() or dst.read_bytes() != data:
                dst.write_bytes(data)
        MANIFEST.write_text(_manifest_text(manifest))
    total = sum(p.stat().st_size for p in SPIRV_DIR.glob("*.spv"))
    print(f"{len(KERNELS)} kernels ({len(wanted)} SPIR-V files, {total / 1024:.0f} KiB) in {SPIRV_DIR}")


def check() -> int:
    """0 if spirv/ holds exactly what the sources compile to; else 1, with one sentence."""
    with tempfile.TemporaryDirectory() as tmp:
        manifest = compile_all(Path(tmp))
        stale = []
        for name, variant in builds():
            fname = spirv_path(name, variant).name
            shipped = SPIRV_DIR / fname
            if not shipped.exists() or shipped.read_bytes() != (Path(tmp) / fname).read_bytes():
                stale.append(fname[: -len(".spv")])
        wanted = {spirv_path(n, v).name for n, v in builds()}
        extra = sorted(p.name for p in SPIRV_DIR.glob("*.spv") if p.name not in wanted)
    problems = []
    if stale:
        problems.append(f"stale or missing SPIR-V for {', '.join(stale)}")
    if extra:
        problems.append(f"leftover files {', '.join(extra)}")
    try:
        shipped_manifest = load_manifest()
    except (OSError, ValueError):
        shipped_manifest = None
    if shipped_manifest is None:
        problems.append("no readable manifest.json")
    elif _manifest_text(shipped_manifest) != _manifest_text(manifest):
        if shipped_manifest.get("source_sha256") != manifest["source_sha256"]:
            problems.append("the manifest's source hash does not match native/vulkan/shaders")
        else:
            problems.append("the manifest does not match the kernels")
    if problems:
        print(f"native/vulkan/spirv is out of date ({'; '.join(problems)}): run python3 -m mtprun.native.vulkan.build_shaders.")
        return 1
    print(f"native/vulkan/spirv is up to date ({len(KERNELS)} kernels).")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m mtprun.native.vulkan.build_shaders", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="recompile into a temporary directory and fail if spirv/ differs")
    args = ap.parse_args(argv)
    if args.check:
        return check()
    build()
    return 0


if __name__ == "__main__":
    sys.exit(main())
