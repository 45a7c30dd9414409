"""What only the Vulkan backend has: push-constant packing, device choice, the shipped SPIR-V kept
equal to its GLSL sources, and dispatches split past the device's grid limit. Its ops are checked
in test_gpu_backends.py and whole models in the model suite (fixtures.backend_params), on a Vulkan
GPU or on a CPU driver (Mesa's lavapipe, as on CI)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from ctypes import c_float, c_int32, c_int64, c_uint64

import numpy as np
import pytest

from fixtures import backend_param
from mtprun.native import create_backend
from mtprun.native.gpu import TYPES
from mtprun.native.numpy_backend import NumpyBackend
from mtprun.native.vulkan import build_shaders
from mtprun.native.vulkan.device import PUSH_BYTES, pack_push_constants
from mtprun.runner.errors import MtprunError
from mtprun.runner.graph import Graph

needs_vulkan = pytest.mark.skipif(bool(backend_param("vulkan").marks), reason="no Vulkan device here")


def test_push_constants_are_laid_out_as_std430():
    data = pack_push_constants([c_int32(7), c_uint64(0x1122334455667788), c_float(1.5), c_int64(-2), c_int32(3)])
    assert len(data) == 36  # 4 (+4 pad) + 8 + 4 (+4 pad) + 8 + 4
    assert data[8:16] == (0x1122334455667788).to_bytes(8, "little")
    assert np.frombuffer(data[16:20], np.float32)[0] == 1.5
    assert int.from_bytes(data[24:32], "little", signed=True) == -2
    with pytest.raises(MtprunError, match="at most 128"):
        pack_push_constants([c_uint64(0)] * (PUSH_BYTES // 8 + 1))


def test_every_kernel_the_compiler_launches_is_shipped():
    names = set(build_shaders.kernel_names())
    for suffix, _, _ in TYPES.values():
        for kernel in [f"mm_{suffix}_{nb}" for nb in (1, 2, 4, 8)] + [f"mmid_{suffix}", f"get_rows_{suffix}"]:
            assert kernel in names, kernel
    for kernel in ("norm_rows", "binary", "unary", "swiglu", "copy_rows", "rope", "kv_write", "attention", "moe_route",
                   "moe_combine", "ssm_conv_4", "delta_net_128"):
        assert kernel in names, kernel
    for kernel, variant in build_shaders.builds():
        assert build_shaders.spirv_path(kernel, variant).read_bytes()[:4] == b"\x03\x02\x23\x07", (kernel, variant)
    # matrix products have a build for CPU drivers and one for 32-wide subgroups
    assert all(set(build_shaders.KERNELS[k].variants) == {"sg", "cpu"} for k in names if k.startswith(("mm_", "mmid_")))


def test_shipped_spirv_was_built_from_these_sources():
    assert build_shaders.load_manifest()["source_sha256"] == build_shaders.source_hash(), (
        "native/vulkan/shaders changed since native/vulkan/spirv was built: run python3 -m mtprun.native.vulkan.build_shaders")


@pytest.mark.skipif(shutil.which("glslc") is None, reason="glslc is not installed")
def test_shipped_spirv_equals_a_fresh_compile():
    proc = subprocess.run([sys.executable, "-m", "mtprun.native.vulkan.build_shaders", "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_vulkan
def test_device_choice_by_environment(monkeypatch):
    monkeypatch.setenv("MTPRUN_VULKAN_DEVICE", "no such device anywhere")
    with pytest.raises(MtprunError, match="matches none of the Vulkan devices") as exc:
        create_backend("vulkan")
    assert "\n" not in str(exc.value)
    monkeypatch.setenv("MTPRUN_VULKAN_DEVICE", "0")
    assert create_backend("vulkan").device_name


@needs_vulkan
def test_auto_never_picks_a_cpu_vulkan_driver():
    backend = create_backend("vulkan")
    if not backend.on_cpu_driver:
        pytest.skip("this Vulkan device is a GPU")
    assert create_backend("auto").name != "vulkan"


@needs_vulkan
def test_row_grids_past_the_device_limit_are_dispatched_in_pieces():
    """norm_rows runs one workgroup per row: 70,000 rows exceed the 65,535 workgroups a dispatch
    may have on most devices, so the recorded command buffer splits it (vkCmdDispatchBase)."""
    rows, d = 70_000, 4
    g = Graph("norm")
    g.output("y", g.rms_norm(g.input("x", (rows, d)), None, 1e-6))
    x = np.random.default_rng(0).standard_normal((rows, d)).astype(np.float32)
    ours = create_backend("vulkan").run(g, {"x": x})["y"]
    ref = NumpyBackend().run(g, {"x": x})["y"]
    assert np.abs(ours - ref).max() <= 1e-6 * np.abs(ref).max()


def test_info_lists_every_backend(capsys):
    from mtprun.runner.cli import main

    assert main(["info", "--backends"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["cpu", "cuda", "vulkan", "metal", "numpy"]
    assert all(line.split()[1] in ("works", "no") for line in lines)


@needs_vulkan
def test_timestamp_queries_measure_the_gpu_time_of_each_step():
    import time

    backend = create_backend("vulkan")
    g = Graph("norm")
    g.output("y", g.rms_norm(g.input("x", (512, 256)), None, 1e-6))
    x = np.ones((512, 256), np.float32)
    backend.run(g, {"x": x})
    before, t0 = backend.device_seconds, time.perf_counter()
    backend.run(g, {"x": x})
    wall = time.perf_counter() - t0
    assert 0.0 < backend.device_seconds - before <= wall
