"""The kernels: kernels/*.cu(h) compiled as one NVRTC program for the device's architecture,
cached on disk (keyed by source, architecture, options, NVRTC and driver versions), loaded once."""

from __future__ import annotations

import hashlib
import os
from ctypes import c_void_p
from pathlib import Path

from mtprun.native.cuda.driver import Driver

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
# Headers first, then the kernel files in name order: one translation unit.
_HEADERS = ("common.cuh", "quants.cuh")
# Separate roundings for a * b + c, as the float32 reference; dot products use fmaf explicitly.
OPTIONS = ("--std=c++17", "--fmad=false")


def source() -> str:
    files = [KERNEL_DIR / h for h in _HEADERS] + sorted(KERNEL_DIR.glob("*.cu"))
    return "\n".join(f"// ---- {f.name}\n{f.read_text()}" for f in files)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mtprun" / "cuda"


_STATIC_SHARED = 48 * 1024  # dynamic shared memory any kernel may take without asking


class Kernels:
    """Kernel functions by name, resolved on first use."""

    def __init__(self, driver: Driver) -> None:
        self._driver = driver
        self._module = driver.load_module(_cubin(driver))
        self._functions: dict[str, c_void_p] = {}
        self._shared: dict[str, int] = {}  # dynamic shared memory allowed past _STATIC_SHARED

    def __getitem__(self, name: str) -> c_void_p:
        fn = self._functions.get(name)
        if fn is None:
            fn = self._functions[name] = self._driver.function(self._module, name)
        return fn

    def launchable(self, name: str, shared: int) -> c_void_p:
        """The kernel, allowed `shared` bytes of dynamic shared memory per block."""
        fn = self[name]
        if shared > self._shared.get(name, _STATIC_SHARED):
            self._driver.allow_shared(fn, shared)
            self._shared[name] = shared
        return fn


def _cubin(driver: Driver) -> bytes:
    src = source()
    arch = driver.compute_capability
    key = hashlib.sha256("\0".join([src, repr(arch), repr(OPTIONS), str(driver.version)]).encode()).hexdigest()[:32]
    path = cache_dir() / f"sm{arch[0]}{arch[1]}-{key}.cubin"
    if path.is_file():
        return path.read_bytes()
    from mtprun.native.cuda.nvrtc import Nvrtc  # only needed on a cache miss

    image = Nvrtc(arch).compile(src, "mtprun_kernels.cu", arch, OPTIONS)
    try:  # best effort: an unwritable cache only costs a recompile next time
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(image)
        os.replace(tmp, path)
    except OSError:
        pass
    return image
