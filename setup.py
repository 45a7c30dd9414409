"""Builds the native CPU backend (native/cpu/*.c) into mtprun/native/_mtprun_cpu*.so, a plain
shared library that native/cpu_backend.py loads with ctypes. Everything else is in pyproject.toml.

The build is optional: without a C compiler mtprun installs anyway and `--backend cpu` says the
library is missing. SIMD variants are compiled per function (target attributes) and chosen at run
time, so one binary runs on every CPU of its architecture.
"""

from glob import glob

from setuptools import Extension, setup

CFLAGS = [
    "-O3",
    "-std=gnu11",
    # No implicit fused multiply-adds: element-wise ops stay bit-identical to the NumPy reference
    # and to each other's SIMD variants; kernels that want FMA ask for it explicitly.
    "-ffp-contract=off",
    # Float compares may be if-converted (the clamps in mtp_exp: loops over it vectorise); no value changes.
    "-fno-trapping-math",
    "-fvisibility=default",
]

setup(
    ext_modules=[
        Extension(
            "mtprun.native._mtprun_cpu",
            sources=sorted(glob("native/cpu/*.c")),
            depends=sorted(glob("native/cpu/*.h")),
            include_dirs=["native/cpu"],
            extra_compile_args=CFLAGS,
            libraries=["m", "pthread"],
            optional=True,
        )
    ]
)
