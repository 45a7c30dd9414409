"""What only the CUDA backend has: its one-line error without a GPU, and CUDA graph replay equal to
launching the kernels one by one. Its ops are checked in test_gpu_backends.py and whole models in
the model suite (fixtures.backend_params). Skipped (with the reason) where no NVIDIA GPU, driver
or NVRTC is present, as on CI."""

from __future__ import annotations

import re

import gguf
import numpy as np
import pytest

import mtprun
from fixtures import model_file, needs_fixtures, prompts
from mtprun.native import create_backend
from mtprun.native.cuda.module import KERNEL_DIR
from mtprun.native.cuda_backend import MIN_COMPUTE_CAPABILITY
from mtprun.runner.errors import MtprunError
from test_metal_backend import _cuda_kernel_names
from test_gpu_backends import CHANNELS, WIDTH, random_weight, recurrent_graph, recurrent_inputs, recurrent_states

F32 = np.float32
T = gguf.GGMLQuantizationType


def _probe() -> str | None:
    try:
        create_backend("cuda")
    except MtprunError as e:
        return str(e)
    return None


_NO_CUDA = _probe()
needs_cuda = pytest.mark.skipif(_NO_CUDA is not None, reason=f"no CUDA backend on this machine: {_NO_CUDA}")


def test_without_a_gpu_the_error_is_one_clear_line():
    if _NO_CUDA is None:
        pytest.skip("a GPU is present")
    assert "\n" not in _NO_CUDA and ("GPU" in _NO_CUDA or "NVRTC" in _NO_CUDA)


@pytest.mark.parametrize("arch", [MIN_COMPUTE_CAPABILITY, (7, 5), (8, 0), (9, 0)], ids=lambda a: f"sm_{a[0]}{a[1]}")
def test_kernels_compile_for_each_architecture(arch):
    """The kernels are one NVRTC program built for the GPU at hand, so one kernel that needs a newer
    chip breaks the backend on every older one (cp.async, sm_80 and later, once did on Turing and
    Pascal). Needs NVRTC, not a GPU: the oldest GPUs taken (dp4a), sm_75 (no cp.async), sm_80 (int8
    mma), sm_90 (early launches)."""
    from mtprun.native.cuda.module import OPTIONS, source

    nvrtc = _nvrtc()
    if arch not in nvrtc.architectures:  # CUDA 13's NVRTC builds nothing before Turing
        pytest.skip(f"this NVRTC ({nvrtc.version[0]}.{nvrtc.version[1]}) does not build for sm_{arch[0]}{arch[1]}")
    assert nvrtc.compile(source(), "mtprun_kernels.cu", arch, OPTIONS)


def test_an_architecture_nvrtc_cannot_build_is_one_clear_line():
    nvrtc = _nvrtc()
    with pytest.raises(MtprunError) as e:
        nvrtc.compile("", "empty.cu", (1, 0), [])
    assert "\n" not in str(e.value) and "cannot build for sm_10" in str(e.value)


def test_the_first_nvrtc_that_builds_for_the_gpu_is_taken(monkeypatch):
    """With CUDA 13's NVRTC on the library path and CUDA 12's from `mtprun[cuda]`, a Pascal GPU gets
    the one that builds for it; where none does, the first found (whose compile names its range)."""
    from mtprun.native.cuda import nvrtc

    builds = {"cu13": [(7, 5), (9, 0)], "cu12": [(6, 1), (7, 5), (9, 0)]}
    monkeypatch.setattr(nvrtc, "_candidates", lambda: ["missing", "cu13", "cu12"])
    monkeypatch.setattr(nvrtc.ctypes, "CDLL", lambda path: path if path in builds else (_ for _ in ()).throw(OSError(path)))

    def bind(self, lib):
        self._lib, self.architectures = lib, builds[lib]

    monkeypatch.setattr(nvrtc.Nvrtc, "_bind", bind)
    assert nvrtc.Nvrtc((6, 1))._lib == "cu12"
    assert nvrtc.Nvrtc((9, 0))._lib == "cu13"
    assert nvrtc.Nvrtc((5, 0))._lib == "cu13"
    assert nvrtc.Nvrtc()._lib == "cu13"


def _nvrtc():
    from mtprun.native.cuda.nvrtc import Nvrtc

    try:
        return Nvrtc()
    except MtprunError as e:
        pytest.skip(str(e))


@needs_cuda
def test_graph_replay_equals_direct_launches_across_commits():
    """A captured CUDA graph replays with the snapshot committed since (read from device memory),
    bit for bit what launching the kernels one by one gives."""
    from mtprun.native.cuda_backend import CudaBackend

    rng = np.random.default_rng(5)
    dim = 64
    cw = random_weight("cw", T.F32, (CHANNELS, WIDTH), rng)
    backends = [CudaBackend(graphs=True), CudaBackend(graphs=False)]
    for b in backends:
        b.load_weights({"cw": cw})
        b.alloc_states(recurrent_states(dim))
    graphs = {}
    for n, keep in ((6, 6), (3, 2), (1, 1), (3, 1), (3, 3), (1, 1), (3, 2), (2, 2)):
        if n not in graphs:  # one Graph per size, replayed with each new input and commit
            graphs[n] = recurrent_graph(n, dim)
        g, inputs = graphs[n], recurrent_inputs(rng, n, dim)
        got = [b.run(g, inputs) for b in backends]
        for name in got[0]:
            assert np.array_equal(got[0][name], got[1][name]), (n, name)
        for b in backends:
            b.commit(["conv", "ssm"], keep)
        for name in ("conv", "ssm"):
            assert np.array_equal(backends[0].read_state(name)[0], backends[1].read_state(name)[0]), (n, name)
    compiled = backends[0]._compiled
    assert len(compiled) == len(graphs) and all(c.program[1] is not None for c in compiled.values())



@needs_cuda
@needs_fixtures
@pytest.mark.parametrize("mode", ["f32", "q8"])
def test_graph_replay_equals_direct_launches_on_a_model(monkeypatch, mode):
    """tinycoder with MTP (verify batches, rollbacks) through CUDA graphs and through one launch per
    kernel: the same tokens and the same logits, bit for bit. On sm_90 the graphs start each kernel
    as the one before drains (programmatic dependent launch), the direct launches never."""
    m = mtprun.load(model_file("tinycoder", "q8_0"), backend="cuda", n_ctx=1024, activations=mode)
    monkeypatch.setenv("MTPRUN_CUDA_GRAPHS", "0")
    direct = mtprun.load(model_file("tinycoder", "q8_0"), backend="cuda", n_ctx=1024, activations=mode)
    assert direct._ctx.backend.graphs is False and m._ctx.backend.graphs is True
    for ids in list(prompts("tinycoder").values())[:2]:
        for depth in (0, 3):
            a = m.generate(ids, n_predict=32, spec_draft_n_max=depth)
            b = direct.generate(ids, n_predict=32, spec_draft_n_max=depth)
            assert a.tokens == b.tokens, depth
        assert np.array_equal(m.logits(ids), direct.logits(ids))
    dev = m._ctx.backend._dev
    assert dev.early_launches == (dev._drv.compute_capability >= (9, 0) and dev._drv.version >= 12030)


def _kernel_bodies(text: str) -> dict[str, str]:
    """Each `extern "C" __global__` kernel's name and body (to its matching brace)."""
    bodies = {}
    for m in re.finditer(r'extern "C" __global__ void (?:__launch_bounds__\([^)]*\)[\s\\]*)?([\w#]+)\(', text):
        start = text.index("{", m.end())
        depth, i = 0, start
        while True:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                break
            i += 1
        bodies[m.group(1)] = text[start : i + 1]
    return bodies


def test_every_kernel_waits_for_the_kernels_before_it():
    """Graphs start every kernel as a programmatic dependent of the one before (sm_90), so each must
    call wait_previous() before it reads what earlier kernels wrote: directly (begin_kernel), or, for
    the matrix products that first start their weight copies, in the template it calls."""
    text = "\n".join(p.read_text() for p in sorted(KERNEL_DIR.glob("*.cu")))
    kernels = _kernel_bodies(text)
    assert len(kernels) >= 20
    for name, body in kernels.items():
        if "begin_kernel();" in body:
            continue
        assert "allow_next();" in body, name
        callee = re.search(r"(\w+)<[^;]*>\(", body).group(1)
        template = re.search(rf"__device__ __forceinline__ void {callee}\([^)]*\) \{{(.*?)\n\}}", text, re.S)
        assert template is not None and "wait_previous();" in template.group(1), name


@needs_cuda
@needs_fixtures
@pytest.mark.parametrize("model, qtype, mode", [("tinycoder", "q8_0", "f32"), ("tinycoder", "q8_0", "q8"),
                                                ("tinycoder", "q4_k_m", "q8x2"), ("tiny-qwen35moe", "q4_k_m", "q8")])
def test_fused_launches_equal_separate_ones(model, qtype, mode):
    """native/fusion.py's launches (norms with the residual add, gate and int8 rows around them,
    element-wise chains, conv + silu, slices as views) give what the separate kernels give, bit for
    bit: the same tokens with MTP (verify batches, rollbacks) and the same logits."""
    fused = mtprun.load(model_file(model, qtype), backend="cuda", n_ctx=1024, activations=mode)
    separate = mtprun.load(model_file(model, qtype), backend="cuda", n_ctx=1024, activations=mode)
    separate._ctx.backend._dev.fuse = False
    for ids in list(prompts(model).values())[:2]:
        for depth in (0, 3):
            a = fused.generate(ids, n_predict=24, spec_draft_n_max=depth)
            b = separate.generate(ids, n_predict=24, spec_draft_n_max=depth)
            assert a.tokens == b.tokens, depth
        assert np.array_equal(fused.logits(ids), separate.logits(ids))
    kernels = {launch.kernel.rstrip("_0123456789") for c in fused._ctx.backend._compiled.values() for launch in c.launches}
    assert {"norm_fused", "chain", "ssm_conv_silu"} <= kernels and not kernels & {"norm_rows", "binary"}, kernels


@needs_cuda
@pytest.mark.parametrize("mode", ["f32", "q8", "q8x2"])
def test_wide_norms_fused_equal_separate_ones(mode):
    """Norms over rows past 1024 values (a block of 1024 threads a row, kernels/norm.cu: 2304, a
    partial last step; a 27B's 5120; 9216, past the longest fused row) with the residual add, the
    silu gate and the int8 rows of the products after them: fused launches give the separate ones'
    bits, each row the same alone as in a batch, and in f32 the NumPy reference's values."""
    from mtprun.native.cuda_backend import CudaBackend
    from mtprun.native.numpy_backend import NumpyBackend
    from mtprun.runner.graph import Graph

    rng = np.random.default_rng(12)
    n, m = 3, 8
    for d in (2304, 5120, 9216):
        ws = [random_weight("nw", T.F32, (d,), rng), random_weight("wk", T.Q4_K, (m, d), rng), random_weight("w8", T.Q8_0, (m, d), rng)]
        fused, separate, ref = CudaBackend(activations=mode), CudaBackend(activations=mode), NumpyBackend()
        separate._dev.fuse = False
        for b in (fused, separate, ref):
            b.load_weights({w.name: w for w in ws})

        def graph(rows: int) -> Graph:
            g = Graph("wide_norms")
            x, y, z = (g.input(name, (rows, d)) for name in "xyz")
            h, nw = x + y, g.weight("nw", (d,))
            g.output("h", h)
            g.output("k", g.matmul(g.rms_norm(h, nw, 1e-6), g.weight("wk", (m, d))))
            g.output("gated", g.matmul(g.rms_norm(z, nw, 1e-6) * g.unary("silu", y), g.weight("w8", (m, d))))
            g.output("l2", g.l2_norm(x, 1e-6))
            return g

        inputs = {name: rng.standard_normal((n, d)).astype(F32) for name in "xyz"}
        got = fused.run(graph(n), inputs)
        kernels = {launch.kernel for c in fused._compiled.values() for launch in c.launches}
        assert any(k.startswith("norm_fused_") for k in kernels) == (d <= 8192), kernels
        for name, want in separate.run(graph(n), inputs).items():
            assert np.array_equal(got[name], want), (d, name)
        for i in range(n):
            alone = fused.run(graph(1), {name: v[i : i + 1] for name, v in inputs.items()})
            assert all(np.array_equal(alone[name][0], got[name][i]) for name in got), (d, i)
        if mode == "f32":
            for name, want in ref.run(graph(n), inputs).items():
                assert np.abs(got[name] - want).max() <= 1e-5 * np.abs(want).max(), (d, name)


@needs_cuda
@pytest.mark.parametrize("tensor_cores", [True, False], ids=["mma", "dp4a"])
@pytest.mark.parametrize("mode", ["q8", "q8x2"])
@pytest.mark.parametrize("qtype", [T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K], ids=lambda t: t.name)
def test_int8_activation_products(qtype, mode, tensor_cores):
    """kernels/matmul_q8.cu (dp4a: one token, and batches up to 8 without tensor cores) and
    matmul_q8_mma.cu (tensor cores: Q4_K and Q5_K batches of 3..8, q8_mmv; prompt passes, q8_mmt) against
    the NumPy model of the CPU backend's int8 modes (q8_model): the same activation rows and exact
    integer block sums, only the float32 order of the block terms differs, so within float32
    rounding. Every row is bit-equal whatever the batch of its kernel: 1..8 rows as one row alone
    (q8_mmv as the one-token kernel), and 9 or more as in the whole 40-row batch, at any offset.
    11 super-blocks a K-quant row: each of q8_mmv's warps adds up several, some none."""
    import q8_model
    from mtprun.native.cuda_backend import CudaBackend
    from q8_cases import MODES, activations, run_matmul

    rng = np.random.default_rng(700 + int(qtype))
    m, k = 37, 800 if qtype == T.Q8_0 else 2816  # 37 rows: past two blocks of 16, inside one of 64; 800: a partial chunk
    w = random_weight("w", qtype, (m, k), rng)
    x = np.concatenate([activations(rng, 11, k), rng.standard_normal((29, k)).astype(F32)])
    be = CudaBackend(activations=mode)
    if not be._dev.int8_mma and tensor_cores:
        pytest.skip(f"{be._dev.name} has no int8 tensor-core products")
    be._dev.int8_mma = tensor_cores  # before any graph is compiled
    be.load_weights({"w": w})
    full = run_matmul(be, x, m)
    single = np.concatenate([run_matmul(be, x[i : i + 1], m) for i in range(len(x))])
    ref = q8_model.matmul(qtype, w.data, x, MODES[mode])
    for got in (full, single):
        err = np.abs(got - ref).max(axis=1) / np.maximum(np.abs(ref).max(axis=1), np.finfo(F32).tiny)
        assert err.max() < 1e-5, err.max()
    for n in (*range(2, 10), 17, 33):
        for start in (0, 3, len(x) - n):
            expect = (single if n <= 8 else full)[start : start + n]
            assert np.array_equal(run_matmul(be, x[start : start + n], m), expect), (n, start)
    kernels = {launch.kernel for c in be._compiled.values() for launch in c.launches}
    assert any(name.startswith("q8_mmt_") for name in kernels) == tensor_cores, kernels
    assert any(name.startswith("q8_mmv_") for name in kernels) == (tensor_cores and qtype in (T.Q4_K, T.Q5_K)), kernels


@needs_cuda
@pytest.mark.parametrize("qtype", [T.Q4_K, T.Q5_K], ids=lambda t: t.name)
def test_two_token_batches_of_short_rows_run_on_tensor_cores_bit_equal(qtype):
    """Rows shorter than gpu.MMV_SHORT_ROW (tinycoder's: 1 or 2 super-blocks) take q8_mmv from 2 tokens
    on, longer ones from gpu.MMV_MIN_TOKENS: either way each row equals the one-token kernel's."""
    from mtprun.native import gpu
    from mtprun.native.cuda_backend import CudaBackend
    from q8_cases import activations, run_matmul

    rng = np.random.default_rng(710 + int(qtype))
    m, k = 37, 512
    assert k < gpu.MMV_SHORT_ROW <= 2816 and gpu.MMV_MIN_TOKENS > 2
    w = random_weight("w", qtype, (m, k), rng)
    x = activations(rng, 8, k)
    be = CudaBackend(activations="q8")
    if not be._dev.int8_mma:
        pytest.skip(f"{be._dev.name} has no int8 tensor-core products")
    be.load_weights({"w": w})
    single = np.concatenate([run_matmul(be, x[i : i + 1], m) for i in range(len(x))])
    for start in range(len(x) - 1):
        assert np.array_equal(run_matmul(be, x[start : start + 2], m), single[start : start + 2]), start
    kernels = {launch.kernel for c in be._compiled.values() for launch in c.launches}
    assert any(name.startswith("q8_mmv_") for name in kernels) and not any(
        name.startswith(f"q8_mm_{qtype.name.lower()}_2_") for name in kernels), kernels


@needs_cuda
@pytest.mark.parametrize("mode", ["q8", "q8x2"])
def test_products_of_one_input_share_a_launch_bit_equal(mode):
    """Products of one input that take the same int8 kernel (fusion.py's merge: q, k and v; gate and
    up) run as one launch, up to gpu.PRODUCTS matrices of any row counts, and each gives the bits
    of its own launch; another type's product keeps its own. One token (q8_mm), 2 (q8_mm, short rows:
    q8_mmv) and 4 (q8_mmv)."""
    from mtprun.native import gpu
    from mtprun.native.cuda_backend import CudaBackend
    from mtprun.runner.graph import Graph
    from q8_cases import activations, run_matmul

    rng = np.random.default_rng(733)
    k, rows = 512, (37, 8, 130, 1, 16)
    assert len(rows) == gpu.PRODUCTS + 1  # one more Q4_K matrix than a launch takes
    types = [T.Q4_K] * 5 + [T.Q6_K]
    weights = {f"w{i}": random_weight(f"w{i}", t, (rows[i % 5], k), rng) for i, t in enumerate(types)}
    be = CudaBackend(activations=mode)
    be.load_weights(weights)
    for n in (1, 2, 4):
        x = activations(rng, max(n, 3), k)[:n]
        g = Graph(f"products{n}")
        xin = g.input("x", (n, k))
        for name, w in weights.items():
            g.output(name, g.matmul(xin, g.weight(name, w.shape)))
        got = be.run(g, {"x": x})
        launched = [launch.kernel for launch in be._compiled[id(g)].launches if launch.kernel.startswith("q8_mm")]
        assert len(launched) == 3, launched  # 4 + 1 Q4_K matrices, 1 Q6_K
        for name, w in weights.items():
            be.load_weights({"w": w})
            assert np.array_equal(got[name], run_matmul(be, x, w.shape[0])), (n, name)


def test_the_split_attention_constants_match_gpu_py():
    """gpu.py sizes the split attention's grid and its shared scratch from its copies of
    attention.cu's constants: a drift would leave parts out or write past the scratch."""
    from mtprun.native import gpu

    defines = {name: int(value) for name, value in re.findall(r"^#define (ATT_\w+) (\d+)\b", (KERNEL_DIR / "attention.cu").read_text(), re.M)}
    assert (defines["ATT_PARTS"], defines["ATT_WARPS"], defines["ATT_MAX_D"]) == (gpu.ATT_PARTS, gpu._ATT_WARPS, gpu._ATT_MAX_D)
    assert 32 * max(gpu.ATT_SLOTS) == gpu._ATT_MAX_D


def test_every_split_attention_instance_gpu_py_picks_is_built():
    """gpu.py picks the split attention's instance by the head size's channel slots and the query
    heads a warp takes together; attention.cu instantiates them by macros: each pick must exist."""
    from mtprun.native import gpu

    part, merge, rows = gpu.SPLIT_ATTENTION_KERNELS
    names = _cuda_kernel_names()
    picks = {f"{merge}_{s}" for s in gpu.ATT_SLOTS}
    picks |= {f"{kernel}_{s}_{g}" for s in gpu.ATT_SLOTS for g in gpu.ATT_GROUPS if g * s <= gpu.ATT_GROUP_SLOTS for kernel in (part, rows)}
    assert picks <= names, sorted(picks - names)


def test_the_prompt_pass_kernels_constants_match_gpu_py():
    """gpu.py sizes the q8_mmt kernels' grids and shared memory from its copies of the kernel file's
    MMT_* constants: a drift would launch them with too little shared memory or a wrong grid. Read
    from the source (each #define's integer expression), so that it runs without a GPU."""
    import re

    from mtprun.native import gpu
    from mtprun.native.cuda.module import KERNEL_DIR

    values: dict[str, int] = {}
    for name, line in re.findall(r"^#define (MM[TV]_\w+) (.*)$", (KERNEL_DIR / "matmul_q8_mma.cu").read_text(), re.M):
        expr = line.split("//")[0]
        for known, value in values.items():
            expr = re.sub(rf"\b{known}\b", str(value), expr)
        assert re.fullmatch(r"[\d\s()*/+-]+", expr), (name, expr)
        values[name] = int(eval(expr.replace("/", "//")))  # digits and operators only (checked above)
    assert [values[f"MMT_{k}"] for k in ("TOKENS", "ROWS", "WARPS", "STRIDE", "BLOCKS_PER_SM", "SHARED_MAX")] == [
        gpu.MMT_TOKENS, gpu.MMT_ROWS, gpu.MMT_WARPS, gpu.MMT_STRIDE, gpu.MMT_BLOCKS_PER_SM, gpu.MMT_SHARED_MAX]
    assert [values["MMV_WARPS"], values["MMV_STAGES"]] == [gpu.MMV_WARPS, gpu.MMV_STAGES]
    assert {k[len("MMT_SLOT_"):].lower(): v for k, v in values.items() if k.startswith("MMT_SLOT_")} == gpu.MMT_SLOTS
