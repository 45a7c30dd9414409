"""What of the Metal backend runs without a Mac: the one-line error off macOS, the MSL source (the
CUDA kernel set under the same names, argument structs that match every launch gpu.py makes, a C++
syntax check against stand-ins for the Metal types), argument packing, and MetalDevice's own logic
(memory by address, no-copy weights, the per-step encoding) over a fake Metal API. The kernels
themselves have not run: that needs an Apple GPU."""

from __future__ import annotations

import contextlib
import ctypes
import re
import shutil
import subprocess
import sys
from ctypes import c_float, c_int32, c_int64, c_uint64, sizeof
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mtprun.native import gpu
from mtprun.native.fusion import FUSED_KERNELS
from mtprun.native.gpu import SPLIT_ATTENTION_KERNELS, TYPES, GpuBackend
from mtprun.native.metal import api, device, library, objc
from mtprun.native.metal.arguments import SET_BYTES_LIMIT, addresses, pack_arguments, threadgroup_bytes
from mtprun.runner.errors import MtprunError
from mtprun.runner.graph import Graph, StateSpec, WeightTensor

F32 = np.float32
CUDA_KERNELS = Path(gpu.__file__).resolve().parent / "cuda" / "kernels"
_CTYPE_OF = {"i64": c_int64, "long": c_int64, "int": c_int32, "float": c_float}


# -- off macOS
@pytest.mark.skipif(sys.platform == "darwin", reason="on macOS the backend starts (or fails for other reasons)")
def test_off_macos_the_backend_refuses_in_one_line():
    from mtprun.native.metal_backend import MetalBackend

    with pytest.raises(MtprunError) as exc:
        MetalBackend()
    message = str(exc.value)
    assert "\n" not in message and "macOS" in message and "Apple GPU" in message


# -- the Objective-C bindings
def test_every_message_takes_one_argument_per_selector_part():
    messages = [m for mod in (api, objc) for m in vars(mod).values() if isinstance(m, objc.Message)]
    assert len(messages) > 25
    for m in messages:
        assert m.selector.count(":") == len(m.argtypes), m.selector


def test_a_message_is_objc_msgsend_cast_to_its_signature(monkeypatch):
    """Through a real foreign call (libffi), here into a stand-in for objc_msgSend: the receiver,
    the selector and the arguments (structures by value) arrive as the method's C signature says."""
    seen = []

    @ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p, api.MTLSize, api.MTLSize, ctypes.c_char_p)
    def msg_send(receiver, selector, grid, threads, data):
        seen.append((receiver, selector, (grid.width, grid.height, grid.depth), threads.width, data))
        return 7

    lib = SimpleNamespace(sel_registerName={b"dispatch:threads:bytes:": 42}.__getitem__)
    monkeypatch.setattr(objc, "runtime", lambda: SimpleNamespace(lib=lib, msg_send=ctypes.cast(msg_send, ctypes.c_void_p).value))
    message = objc.Message("dispatch:threads:bytes:", ctypes.c_size_t, api.MTLSize, api.MTLSize, ctypes.c_char_p)
    assert message(0x1000, api.MTLSize(3, 4, 1), api.MTLSize(128, 1, 1), b"args") == 7
    assert seen == [(0x1000, 42, (3, 4, 1), 128, b"args")]


# -- argument packing
def test_arguments_are_laid_out_as_msl_structs():
    values = [c_uint64(0x1122334455667788), c_int32(7), c_int64(-2), c_float(1.5), c_int32(3)]
    data = pack_arguments(values)
    assert len(data) == 32  # 8 + 4 (+4 pad) + 8 + 4 + 4: already a multiple of 8
    assert data[:8] == (0x1122334455667788).to_bytes(8, "little")
    assert int.from_bytes(data[16:24], "little", signed=True) == -2
    assert np.frombuffer(data[24:28], F32)[0] == 1.5
    assert len(pack_arguments([c_uint64(1), c_int32(1)])) == 16  # padded to the pointer's alignment
    assert len(pack_arguments([c_int32(1), c_float(1), c_int32(1)])) == 12
    with pytest.raises(ValueError, match="at most 4096"):
        pack_arguments([c_uint64(0)] * (SET_BYTES_LIMIT // 8 + 1))


def test_addresses_and_threadgroup_memory():
    assert addresses([c_uint64(0x1000), c_int64(0x2000), c_uint64(0), c_int32(5), c_uint64(0x3000)]) == [0x1000, 0x3000]
    assert [threadgroup_bytes(n) for n in (0, 4, 16, 17, 512)] == [0, 16, 16, 32, 512]


# -- the MSL source against the CUDA kernels
def _cuda_kernel_names() -> set[str]:
    """Every kernel the CUDA sources define: extern "C" __global__ functions, with the
    instantiation macros (MM_NB, WEIGHT_KERNELS, SSM_CONV, DELTA_NET) expanded."""
    text = "\n".join(f.read_text() for f in sorted(CUDA_KERNELS.glob("*.cu"))).replace("\\\n", " ")
    macros = {m[0]: ([p.strip() for p in m[1].split(",")], m[2])
              for m in re.findall(r"^#define (\w+)\(([^)]*)\)(.*)$", text, re.MULTILINE)}
    body = re.sub(r"^#define .*$", "", text, flags=re.MULTILINE)
    while True:
        def expand(m: re.Match) -> str:
            params, out = macros[m[1]]
            for p, arg in zip(params, (a.strip() for a in m[2].split(","))):
                out = re.sub(rf"\b{p}\b", arg, out)
            return re.sub(r"\s*##\s*", "", out)

        expanded = re.sub(rf"\b({'|'.join(macros)})\(([^()]*)\)", expand, body)
        if expanded == body:
            break
        body = expanded
    return set(re.findall(r'extern "C" __global__ void (?:__launch_bounds__\([^)]*\)\s*)?(\w+)\(', body))


def _msl() -> dict:
    """The assembled source parsed: kernel name -> argument struct name, struct -> member ctypes."""
    src = library.source()
    code = re.sub(r"//[^\n]*", "", src)
    kernels, templates = {}, {}
    for tmpl, name, struct in re.findall(r"(template <[^>]*>\s*)?kernel void (\w+)\(constant (\w+)& \w+ \[\[buffer\(0\)\]\]", code):
        (templates if tmpl else kernels)[name] = struct
    for host_name, typedef, tmpl in re.findall(r'template \[\[host_name\("(\w+)"\)\]\] kernel (\w+) (\w+)<[^>]*>;', code):
        assert typedef == f"{tmpl}_t" and f"typedef decltype({tmpl}<" in code, host_name
        kernels[host_name] = templates[tmpl]
    structs = {}
    for name, members in re.findall(r"struct (\w+) \{(.*?)\};", code, re.DOTALL):
        types = []
        for decl in filter(None, (d.strip() for d in members.split(";"))):
            if "*" in decl:
                types.append(c_uint64)  # a device pointer: 8 bytes
            else:
                kind, names = decl.split(None, 1)
                types += [_CTYPE_OF[kind]] * len(names.split(","))
        structs[name] = types
    return {"src": src, "code": code, "kernels": kernels, "structs": structs}


def test_every_cuda_kernel_has_a_metal_twin_of_the_same_name():
    """Every kernel gpu.py launches on any device; the int8-activation kernels (q8_*), the fused
    ones (native/fusion.py) and the split attention's are CUDA's own: gpu.py launches them only for
    a device whose `activations` asks for them, that fuses, or that sets `attention_parts`."""
    cuda = _cuda_kernel_names()
    assert {"mm_q6_k_8", "mmid_bf16", "get_rows_q4_0", "ssm_conv_5", "delta_net_128", "norm_rows", "attention"} <= cuda
    assert {"q8_rows_256", "q8_mm_q4_k_1_2", "q8_mm_q6_k_8_1", "q8_mm_q8_0_4_2"} <= cuda
    assert {"chain", "norm_fused_256_6", "ssm_conv_silu_4"} <= cuda
    assert {"attention_part_8_3", "attention_merge_8", "attention_rows_2_2"} <= cuda
    own = ("q8_",) + FUSED_KERNELS + SPLIT_ATTENTION_KERNELS
    assert set(_msl()["kernels"]) == {name for name in cuda if not name.startswith(own)}


def test_templated_kernels_follow_gpu_tables():
    table = library.instantiations()
    for code, (suffix, _, _) in TYPES.items():
        assert table[f"mm_{suffix}_8"] == ("mm", f"{code}, 8")
        assert table[f"get_rows_{suffix}"] == ("get_rows", str(code))
        assert f"#define T_{suffix.upper()} {code}\n" in library.source()  # quants.h's type codes are ggml's
    assert {k for k in table if k.startswith(("ssm_conv", "delta_net"))} == {
        *(f"ssm_conv_{w}" for w in gpu.CONV_WIDTHS), *(f"delta_net_{s}" for s in gpu.DELTA_DIMS)}


def test_msl_source_uses_nothing_metal_lacks():
    code = _msl()["code"]
    for banned in (r"\bdouble\b", r"__(global|device|shared|forceinline|launch_bounds)__", r"\bblockIdx\b", r"\bthreadIdx\b", r"__syncthreads", r"if constexpr", r"\bexpf\b"):
        assert not re.search(banned, code), banned
    assert re.findall(r"#include.*", code) == ["#include <metal_stdlib>"]  # our files are assembled, not included


_STANDINS = """\
// Stand-ins for the Metal types and functions the kernels use: enough for a C++ syntax and type
// check (address spaces vanish; `constant` arguments stay read-only).
#include <cstring>
#define kernel
#define device
#define constant const
#define threadgroup
#define thread
#define INFINITY __builtin_inff()
typedef unsigned char uchar;
typedef unsigned short ushort;
typedef unsigned int uint;
struct float4 { float x, y, z, w; };
struct uint2 { uint x, y; };
namespace metal {
template <typename T, typename U> T as_type(U u) { T t; std::memcpy(&t, &u, sizeof t); return t; }
namespace precise { float exp(float); float log(float); float sin(float); float cos(float); }
float fma(float, float, float);
float fmax(float, float);
float fmin(float, float);
float sqrt(float);
int min(int, int);
int max(int, int);
float simd_shuffle_xor(float, ushort);
enum class mem_flags { mem_threadgroup };
void threadgroup_barrier(mem_flags);
typedef int atomic_int;
enum memory_order { memory_order_relaxed };
bool atomic_compare_exchange_weak_explicit(atomic_int*, int*, int, memory_order, memory_order);
}
"""


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("clang++") is None, reason="no C++ compiler")
def test_msl_source_passes_a_cpp_syntax_check(tmp_path):
    """Not the Metal compiler (xcrun metal needs a Mac): C++14, as MSL, over stand-ins; every
    explicit instantiation is compiled, so every weight type's template body is checked."""
    (tmp_path / "metal_stdlib").write_text(_STANDINS)
    # g++ first: it takes the [[host_name]] of explicit instantiations where MSL puts them (and ignores
    # them); clang's C++ mode rejects that place, so under clang they go with the other attributes.
    cxx = shutil.which("g++") or shutil.which("clang++")
    kept = r"(?!host_name)" if "g++" in Path(cxx).name else ""
    src = re.sub(r"\[\[" + kept + r"[^\]]*\]\]", "", library.source())  # parameter attributes: Metal's own
    (tmp_path / "kernels.cpp").write_text(src)
    proc = subprocess.run([cxx, "-std=c++14", "-fsyntax-only", "-Wall", "-Wno-attributes", "-Wno-unused-variable",
                           "-Wno-unknown-pragmas", "-I", str(tmp_path), str(tmp_path / "kernels.cpp")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr


# -- a fake Metal: MetalDevice's own logic on any system
class FakeMetal:
    """Stands in for api.py's messages and objc.py's helpers: buffers are NumPy arrays at made-up
    GPU addresses, a command buffer records what is encoded into it, `on_wait` plays the GPU."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, simd_width: int = 32, max_threads: int = 1024) -> None:
        self.simd_width, self.max_threads = simd_width, max_threads
        self.memory: dict[int, tuple[int, int]] = {}  # handle -> (cpu address, gpu address)
        self.keep: list[np.ndarray] = []
        self.released: list[int] = []
        self.no_copy: list[tuple[int, int]] | None = []  # None: refuse no-copy buffers
        self.encoded: list[tuple] = []
        self.on_wait = lambda: None
        self.status = api.STATUS_COMPLETED
        self._gpu = 1 << 40
        fakes = {
            "create_system_default_device": lambda: 1, "name": lambda dev: "Fake GPU", "supports_family": lambda dev, f: True,
            "new_command_queue": lambda dev: 2, "new_buffer": self._new_buffer, "new_buffer_no_copy": self._no_copy,
            "new_function": lambda lib, name: name, "new_compute_pipeline": lambda dev, fn, err: f"pipeline {fn}",
            "thread_execution_width": lambda pipe: self.simd_width, "max_total_threads": lambda pipe: self.max_threads,
            "contents": lambda h: self.memory[h][0], "gpu_address": lambda h: self.memory[h][1],
            "command_buffer": lambda queue: "cb", "compute_command_encoder": lambda cb: "enc",
            "use_resources": lambda enc, res, n, usage: self.encoded.append(("use", [res[i] for i in range(n)], usage)),
            "set_compute_pipeline_state": lambda enc, pipe: self.encoded.append(("pipeline", pipe)),
            "set_bytes": lambda enc, data, n, index: self.encoded.append(("bytes", data, n, index)),
            "set_threadgroup_memory_length": lambda enc, n, index: self.encoded.append(("shared", n, index)),
            "dispatch_threadgroups": lambda enc, grid, threads: self.encoded.append(
                ("dispatch", (grid.width, grid.height, grid.depth), (threads.width, threads.height, threads.depth))),
            "end_encoding": lambda enc: self.encoded.append(("end",)), "commit": lambda cb: self.encoded.append(("commit",)),
            "wait_until_completed": lambda cb: self.on_wait(), "status": lambda cb: self.status, "error": lambda cb: "GPU hang",
        }
        for name, fake in fakes.items():
            monkeypatch.setattr(api, name, fake)  # raises where api.py has no such message
        for name, fake in {"autorelease_pool": contextlib.nullcontext, "nsstring": str, "text": str, "error_text": str,
                           "release": self.released.append, "create": lambda cls: "options"}.items():
            monkeypatch.setattr(objc, name, fake)
        monkeypatch.setattr(device, "compile_library", lambda dev: "library")

    def _handle(self, cpu: int, nbytes: int) -> int:
        handle = len(self.memory) + 100
        self.memory[handle] = (cpu, self._gpu)
        self._gpu += -(-max(nbytes, 1) // 65536) * 65536 + 65536  # gaps between buffers
        return handle

    def _new_buffer(self, dev, nbytes: int, options: int) -> int:
        assert options == api.STORAGE_SHARED
        arr = np.full(nbytes, 0xAB, np.uint8)  # Metal does not promise zeros either
        self.keep.append(arr)
        return self._handle(arr.ctypes.data, nbytes)

    def _no_copy(self, dev, start: int, length: int, options: int, deallocator) -> int | None:
        if self.no_copy is None:
            return None
        self.no_copy.append((start, length))
        return self._handle(start, length)


def _weight(name: str, ggml_type: int, shape: tuple[int, ...]) -> WeightTensor:
    _, block_values, block_bytes = TYPES[ggml_type]
    rows = int(np.prod(shape[:-1]))
    return WeightTensor(name, ggml_type, shape, np.zeros((rows, shape[-1] // block_values * block_bytes), np.uint8))


def _every_op_backend(monkeypatch) -> tuple[GpuBackend, FakeMetal, list[tuple[Graph, dict]]]:
    """A GpuBackend on MetalDevice (fake Metal) and graphs that launch every kernel of the set."""
    fake = FakeMetal(monkeypatch)
    backend = GpuBackend(device.MetalDevice())
    k, m, d, hk, hv = 256, 8, 64, 2, 4
    weights = [_weight(f"w{code}", code, (m, k)) for code in TYPES]
    weights += [_weight("router", 0, (4, k)), _weight("nw", 0, (d,))]
    weights += [_weight(f"{part}{code}", code, (4, k, k)) for code in TYPES for part in ("up", "gate", "down")]
    weights += [_weight(f"cw{w}", 0, (96, w)) for w in gpu.CONV_WIDTHS]
    backend.load_weights({w.name: w for w in weights})
    states = [StateSpec("kv", "kv", (64, 2, d))]
    states += [StateSpec(f"conv{w}", "recurrent", (w - 1, 96), 4) for w in gpu.CONV_WIDTHS]
    states += [StateSpec(f"ssm{s}", "recurrent", (hv, s, s), 4) for s in gpu.DELTA_DIMS]
    backend.alloc_states(states)
    graphs = []
    for n in (1, 2, 3, 8):  # every NB of the matmul kernels
        g = Graph(f"dense{n}")
        x, ids = g.input("x", (n, k)), g.input("ids", (n,), "i32")
        for code in TYPES:
            g.output(f"mm{code}", g.matmul(x, g.weight(f"w{code}", (m, k))))
            g.output(f"rows{code}", g.get_rows(g.weight(f"w{code}", (m, k)), ids))
            experts = (g.weight(f"{part}{code}", (4, k, k)) for part in ("up", "gate", "down"))
            g.output(f"moe{code}", g.moe(x, g.weight("router", (4, k)), *experts, 2))
        h = g.input("h", (n, 4, d))
        g.output("rms", g.rms_norm(h, g.weight("nw", (d,)), 1e-6))
        g.output("l2", g.l2_norm(h, 1e-6))
        g.output("add", h + g.weight("nw", (d,)))
        g.output("mul", h * g.input("y", (n, 4, 1)))
        g.output("scale", g.scale(h, 0.5))
        for op in ("sigmoid", "silu", "softplus"):
            g.output(op, g.unary(op, h))
        flat = g.reshape(h, (n, 4 * d))
        g.output("concat", g.concat(g.slice(flat, 3, 40), flat))
        g.output("take", g.take_rows(h, [0] * n))
        g.output("argmax", g.argmax(flat))
        pos = g.input("pos", (n,), "i32")
        q = g.rope(h, pos, 32, (5, 5, 6, 0), 1e6)
        kv = g.reshape(g.slice(flat, 0, 2 * d), (n, 2, d))
        g.output("att", g.attention(q, kv, kv, pos, "kv", 0.125))
        inputs = {"x": np.ones((n, k), F32), "ids": np.zeros(n, np.int32), "h": np.ones((n, 4, d), F32),
                  "y": np.ones((n, 4, 1), F32), "pos": np.arange(n, dtype=np.int32)}
        graphs.append((g, inputs))
    g = Graph("recurrent")
    n = 3
    for w in gpu.CONV_WIDTHS:
        g.output(f"conv{w}", g.ssm_conv(g.input(f"cx{w}", (n, 96)), g.weight(f"cw{w}", (96, w)), f"conv{w}"))
    for s in gpu.DELTA_DIMS:
        q, v = g.input(f"q{s}", (n, hk, s)), g.input(f"v{s}", (n, hv, s))
        g.output(f"o{s}", g.delta_net(q, q, v, g.input(f"g{s}", (n, hv)), g.input(f"b{s}", (n, hv)), f"ssm{s}"))
    inputs = {nd.attrs["name"]: np.zeros(nd.shape, F32) for nd in g.nodes if nd.op == "input"}
    graphs.append((g, inputs))
    return backend, fake, graphs


def test_every_launch_matches_its_kernel_in_the_msl_source(monkeypatch):
    msl = _msl()
    backend, _, graphs = _every_op_backend(monkeypatch)
    launched = set()
    for g, inputs in graphs:
        backend.run(g, inputs)
        for launch in backend._compiled[id(g)].launches:
            launched.add(launch.kernel)
            members = msl["structs"][msl["kernels"][launch.kernel]]
            assert [type(v) for v in launch.values] == members, launch.kernel
            struct = type("Args", (ctypes.Structure,), {"_fields_": [(f"m{i}", t) for i, t in enumerate(members)]})
            packed = pack_arguments(launch.values)
            assert packed == bytes(struct(*[v.value for v in launch.values])) and len(packed) == sizeof(struct), launch.kernel
    assert launched == set(msl["kernels"])  # these graphs reach the whole kernel set


def test_a_step_is_one_command_buffer_of_the_prepared_launches(monkeypatch):
    backend, fake, graphs = _every_op_backend(monkeypatch)
    g, inputs = graphs[2]
    backend.run(g, inputs)  # compile and prepare
    c = backend._compiled[id(g)]
    fake.encoded.clear()
    backend.run(g, inputs)
    use, *rest = fake.encoded
    assert use[0] == "use" and use[2] == api.USAGE_READ_WRITE
    resident = set(use[1])
    assert c.arena.handle in resident and len(resident) == len(use[1])
    for launch in c.launches:  # every buffer a launch points into is resident
        for ptr in addresses(launch.values):
            assert backend._dev.buffers.find(ptr, 1)[0].handle in resident
    assert rest[-2:] == [("end",), ("commit",)]
    dispatches = [e for e in rest if e[0] == "dispatch"]
    assert [(d[1], d[2]) for d in dispatches] == [((*l.grid, 1), (l.block, 1, 1)) for l in c.launches]
    pipelines = [e[1] for e in rest if e[0] == "pipeline"]
    changes = [l.kernel for i, l in enumerate(c.launches) if i == 0 or l.kernel != c.launches[i - 1].kernel]
    assert pipelines == [f"pipeline {k}" for k in changes]  # set only when it changes
    assert [e[1] for e in rest if e[0] == "bytes"] == [pack_arguments(l.values) for l in c.launches]
    assert [e[1] for e in rest if e[0] == "shared"] == [threadgroup_bytes(l.shared) for l in c.launches if l.shared]
    assert any(l.kernel == "moe_route" for l in c.launches)


def test_inputs_and_outputs_travel_through_the_arena(monkeypatch):
    fake = FakeMetal(monkeypatch)
    backend = GpuBackend(device.MetalDevice())
    g = Graph("scale")
    g.output("y", g.scale(g.input("x", (3, 5)), 2.0))
    x = np.arange(15, dtype=F32).reshape(3, 5)
    backend.run(g, {"x": x})
    c = backend._compiled[id(g)]
    lay, x_off = c.layout, c.layout.offsets[0]

    def gpu() -> None:  # the kernel: y = 2 x, read from and written to the arena
        arena = c.arena.array
        src = arena[x_off : x_off + x.nbytes].view(F32)
        arena[lay.out_start : lay.out_start + x.nbytes].view(F32)[:] = 2 * src

    fake.on_wait = gpu
    assert np.array_equal(backend.run(g, {"x": x})["y"], 2 * x)

    def bad_position() -> None:
        c.arena.view(lay.out_extra, (1,), np.int32)[0] = 1

    fake.on_wait = bad_position
    with pytest.raises(MtprunError, match="outside the context"):
        backend.run(g, {"x": x})
    assert c.arena.view(lay.out_extra, (1,), np.int32)[0] == 0  # cleared for the next step
    fake.on_wait, fake.status = (lambda: None), 5  # MTLCommandBufferStatusError
    with pytest.raises(MtprunError, match="GPU hang"):
        backend.run(g, {"x": x})


def test_device_memory_by_address(monkeypatch):
    fake = FakeMetal(monkeypatch)
    dev = device.MetalDevice()
    a, b = dev.alloc(64), dev.alloc(32)
    dev.zero(a.ptr, 64)
    dev.upload(a.ptr + 16, np.arange(4, dtype=F32))
    assert np.array_equal(dev.download(np.empty(8, F32), a.ptr), [0, 0, 0, 0, 0, 1, 2, 3])
    dev.zero(a.ptr + 20, 8)
    assert np.array_equal(dev.download(np.empty(4, F32), a.ptr + 16), [0, 0, 0, 3])
    assert dev.buffers.find(b.ptr + 31, 1) == (b, 31)
    for ptr, n in ((a.ptr + 60, 8), (a.ptr - 4, 4), (b.ptr + 32, 1)):
        with pytest.raises(ValueError, match="in no buffer"):
            dev.buffers.find(ptr, n)
    handle, ptr = b.handle, b.ptr
    del b
    assert handle in fake.released  # released with its last reference, and gone from the map
    with pytest.raises(ValueError, match="in no buffer"):
        dev.buffers.find(ptr, 1)


def test_weights_are_mapped_in_place_by_whole_pages(monkeypatch):
    import mmap

    fake = FakeMetal(monkeypatch)
    dev = device.MetalDevice()
    backing = np.arange(3 * mmap.PAGESIZE, dtype=np.uint8)
    data = backing[100 : 100 + mmap.PAGESIZE]  # straddles two pages
    buf = dev.wrap(data)
    start, length = fake.no_copy[0]
    assert start % mmap.PAGESIZE == 0 and length == 2 * mmap.PAGESIZE and start <= data.ctypes.data
    assert np.shares_memory(buf.array, data) and buf.nbytes == data.nbytes and buf.owner is not None
    assert dev.buffers.find(buf.ptr, data.nbytes) == (buf, 0)
    fake.no_copy = None  # Metal refuses: a copy
    copy = dev.wrap(data)
    assert not np.shares_memory(copy.array, data) and np.array_equal(copy.array, data)


@pytest.mark.parametrize("simd_width,max_threads,match", [(64, 1024, "32-wide SIMD"), (32, 64, "threads per threadgroup")])
def test_pipelines_the_kernels_cannot_run_on_are_refused(monkeypatch, simd_width, max_threads, match):
    FakeMetal(monkeypatch, simd_width, max_threads)
    backend = GpuBackend(device.MetalDevice())
    g = Graph("norm")
    g.output("y", g.l2_norm(g.input("x", (2, 8)), 1e-6))
    with pytest.raises(MtprunError, match=match):
        backend.run(g, {"x": np.ones((2, 8), F32)})
