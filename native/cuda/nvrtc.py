"""NVRTC through ctypes: CUDA C source -> cubin for one GPU architecture. Looked for in
$MTPRUN_NVRTC, the system's library path, the `nvidia-cuda-nvrtc*` wheels (pip install 'mtprun[cuda]')
and the usual toolkit folders."""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys
from ctypes import POINTER, byref, c_char_p, c_int, c_size_t, c_void_p
from typing import Sequence

from mtprun.runner.errors import MtprunError

_PATTERNS = (
    "nvidia/cuda_nvrtc/lib/libnvrtc.so*",  # nvidia-cuda-nvrtc-cu12
    "nvidia/cu*/lib/libnvrtc.so*",  # nvidia-cuda-nvrtc (CUDA 13 and later)
)
_TOOLKITS = ("/usr/local/cuda/lib64", "/usr/local/cuda/lib", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/lib/x86_64-linux-gnu")


def _candidates() -> list[str]:
    found = [os.environ["MTPRUN_NVRTC"]] if os.environ.get("MTPRUN_NVRTC") else []
    name = ctypes.util.find_library("nvrtc")
    if name:
        found.append(name)
    for root in sys.path:
        for pattern in _PATTERNS:
            found += sorted(glob.glob(os.path.join(root, pattern)), reverse=True)
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    for folder in ((os.path.join(home, "lib64"),) if home else ()) + _TOOLKITS:
        found += sorted(glob.glob(os.path.join(folder, "libnvrtc.so*")), reverse=True)
    return found


_SIGNATURES = {
    "nvrtcVersion": [POINTER(c_int), POINTER(c_int)],
    "nvrtcCreateProgram": [POINTER(c_void_p), c_char_p, c_char_p, c_int, c_void_p, c_void_p],
    "nvrtcCompileProgram": [c_void_p, c_int, POINTER(c_char_p)],
    "nvrtcGetProgramLogSize": [c_void_p, POINTER(c_size_t)],
    "nvrtcGetProgramLog": [c_void_p, c_char_p],
    "nvrtcGetCUBINSize": [c_void_p, POINTER(c_size_t)],
    "nvrtcGetCUBIN": [c_void_p, c_char_p],
    "nvrtcDestroyProgram": [POINTER(c_void_p)],
    "nvrtcGetNumSupportedArchs": [POINTER(c_int)],
    "nvrtcGetSupportedArchs": [POINTER(c_int)],
}


class Nvrtc:
    def __init__(self, arch: tuple[int, int] | None = None) -> None:
        """The first NVRTC found that builds for `arch` (any, if None), else the first found (whose
        compile then names the architectures it builds). Each NVRTC builds a range of architectures:
        CUDA 13's nothing before Turing, and an older one no GPU newer than itself."""
        first = None
        for path in _candidates():
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            self._bind(lib)
            if arch is None or arch in self.architectures:
                return
            first = first or lib
        if first is None:
            raise MtprunError("the CUDA backend needs NVRTC to build its kernels: pip install 'mtprun[cuda]' (or install the CUDA toolkit).")
        self._bind(first)

    def _bind(self, lib: ctypes.CDLL) -> None:
        for name, args in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, c_int
        lib.nvrtcGetErrorString.argtypes, lib.nvrtcGetErrorString.restype = [c_int], c_char_p
        self._lib = lib
        major, minor = c_int(), c_int()
        self._check(lib.nvrtcVersion(byref(major), byref(minor)), "nvrtcVersion")
        self.version = (major.value, minor.value)
        count = c_int()
        self._check(lib.nvrtcGetNumSupportedArchs(byref(count)), "nvrtcGetNumSupportedArchs")
        archs = (c_int * count.value)()
        self._check(lib.nvrtcGetSupportedArchs(archs), "nvrtcGetSupportedArchs")
        self.architectures = [divmod(a, 10) for a in archs]

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            raise MtprunError(f"NVRTC {what} failed: {self._lib.nvrtcGetErrorString(rc).decode()}.")

    def compile(self, source: str, name: str, arch: tuple[int, int], options: Sequence[str]) -> bytes:
        """A cubin of `source` for sm_<arch>; compile errors raise with NVRTC's log."""
        if arch not in self.architectures:
            oldest, newest = min(self.architectures), max(self.architectures)
            raise MtprunError(
                f"NVRTC {self.version[0]}.{self.version[1]} cannot build for sm_{arch[0]}{arch[1]} (it builds sm_{oldest[0]}{oldest[1]} to "
                f"sm_{newest[0]}{newest[1]}): install an NVRTC that does (pip install nvidia-cuda-nvrtc-cu12 for GPUs before Turing) "
                "or point MTPRUN_NVRTC at one.")
        lib = self._lib
        prog = c_void_p()
        self._check(lib.nvrtcCreateProgram(byref(prog), source.encode(), name.encode(), 0, None, None), "nvrtcCreateProgram")
        try:
            opts = [f"--gpu-architecture=sm_{arch[0]}{arch[1]}", *options]
            argv = (c_char_p * len(opts))(*[o.encode() for o in opts])
            rc = lib.nvrtcCompileProgram(prog, len(opts), argv)
            if rc != 0:
                size = c_size_t()
                lib.nvrtcGetProgramLogSize(prog, byref(size))
                log = ctypes.create_string_buffer(size.value)
                lib.nvrtcGetProgramLog(prog, log)
                raise MtprunError(f"NVRTC could not compile the CUDA kernels for sm_{arch[0]}{arch[1]}:\n{log.value.decode(errors='replace')}")
            size = c_size_t()
            self._check(lib.nvrtcGetCUBINSize(prog, byref(size)), "nvrtcGetCUBINSize")
            cubin = ctypes.create_string_buffer(size.value)
            self._check(lib.nvrtcGetCUBIN(prog, cubin), "nvrtcGetCUBIN")
            return cubin.raw
        finally:
            lib.nvrtcDestroyProgram(byref(prog))
