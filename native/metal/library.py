"""The Metal kernels as one Metal Shading Language source, compiled at run time by
newLibraryWithSource: kernels/common.h and quants.h, the kernel files in name order, then the
explicit instantiations of the templated kernels under the names native/gpu.py launches (one per
weight type of gpu.TYPES, conv width and state size), so that the names follow gpu.py's tables.

`python -m mtprun.native.metal.library > mtprun.metal` writes the source, e.g. to check it on a Mac
with `xcrun -sdk macosx metal -std=metal3.0 -c mtprun.metal`."""

from __future__ import annotations

from pathlib import Path

from mtprun.native.gpu import CONV_WIDTHS, DELTA_DIMS, MM_BATCHES, TYPES

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
_HEADERS = ("common.h", "quants.h")


def instantiations() -> dict[str, tuple[str, str]]:
    """Kernel name -> (MSL kernel template, template arguments) for every templated kernel. Weight
    kernels take the ggml type code (quants.h's T_* constants are those codes)."""
    out: dict[str, tuple[str, str]] = {}
    for code, (suffix, _, _) in TYPES.items():
        out.update({f"mm_{suffix}_{nb}": ("mm", f"{code}, {nb}") for nb in MM_BATCHES})
        out[f"mmid_{suffix}"] = ("mmid", str(code))
        out[f"get_rows_{suffix}"] = ("get_rows", str(code))
    out.update({f"ssm_conv_{k}": ("ssm_conv", str(k)) for k in CONV_WIDTHS})
    out.update({f"delta_net_{s}": ("delta_net", str(s)) for s in DELTA_DIMS})
    return out


def source() -> str:
    files = [KERNEL_DIR / h for h in _HEADERS] + sorted(KERNEL_DIR.glob("*.metal"))
    parts = [f"// ---- {f.name}\n{f.read_text()}" for f in files]
    # Each template's kernel type is declared next to it (typedef decltype(...) <template>_t).
    lines = [f'template [[host_name("{name}")]] kernel {tmpl}_t {tmpl}<{targs}>;'
             for name, (tmpl, targs) in instantiations().items()]
    return "\n".join(parts + ["// ---- instantiations", *lines, ""])


if __name__ == "__main__":
    print(source(), end="")
