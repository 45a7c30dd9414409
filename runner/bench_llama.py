"""llama.cpp, the baseline of `mtprun bench --compare-llama`, measured on the same file in the same run.

Plain decoding and prefill run through llama-cpp-python, on our token ids and thread count, one token
per step, in a child process of their own (`child_main`): llama.cpp's GPU runtime never shares a
process with our backend, its libraries load before NumPy's, and a crash of llama.cpp is reported,
not fatal. That binding has no draft-mtp decoding (its `Llama` drafts only through a
`LlamaDraftModel` such as prompt lookup), so llama.cpp's MTP is measured, when `--llama-mtp` names
it, by llama.cpp's own `llama-speculative-simple` program (`--spec-type draft-mtp`), built from the
source llama-cpp-python vendors: one process per prompt, depth and repetition, its own timer.

On a GPU, llama_decode returns once its graph is queued (llama.cpp synchronizes only when outputs
are read), and llama-cpp-python's `eval` reads none: each timed prefill and forward ends with
llama_synchronize, or it would time the queueing alone.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import time

import numpy as np

from mtprun.runner.bench import PREFILL_BATCH, BenchConfig, BenchPrompt, Progress, best_after_warm_up, peak_rss_mib, timed
from mtprun.runner.errors import MtprunError

# speculative-simple's closing lines (after a log timestamp): "decoded  129 tokens in    0.081 seconds, ...",
# "n_drafted = 96", "n_accept  = 70"
_DECODED = re.compile(r"\bdecoded\s+(\d+) tokens in\s+([0-9.]+) seconds")
_COUNTER = re.compile(r"\bn_(drafted|accept)\s*=\s*(\d+)")
MTP_RUN_TIMEOUT_S = 600
MTP_RUN_ATTEMPTS = 3
COST_RUNS_IN_A_ROW = 5
# The child imports llama_cpp (loading llama.cpp's libraries) before anything imports NumPy: with
# llama.cpp's CUDA build on an H100, a process that had imported NumPy first crashed inside
# llama_model_load_from_file (tokenizer set-up), and one that loaded llama.cpp first ran cleanly.
_CHILD = "import llama_cpp\nfrom mtprun.runner.bench_llama import child_main\nchild_main()"


def import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as exc:
        raise MtprunError(f"--compare-llama needs llama-cpp-python (pip install 'mtprun[oracle]'): {exc}.") from None
    return llama_cpp


def measure_llama(config: BenchConfig, n_ctx: int, prefill_ids: list[int], prompt_ids: list[list[int]],
                  eog: frozenset[int], progress: Progress, gpu: bool) -> dict:
    """_measure_llama in a child process (its progress line on our stderr, its result pickled back)."""
    request = pickle.dumps((config, n_ctx, prefill_ids, prompt_ids, eog, progress.enabled, gpu))
    done = subprocess.run([sys.executable, "-c", _CHILD], input=request, stdout=subprocess.PIPE)
    if done.returncode != 0 or not done.stdout:
        raise MtprunError(f"llama.cpp (llama-cpp-python) failed while measuring the baseline (exit {done.returncode}).")
    result = pickle.loads(done.stdout)
    if isinstance(result, MtprunError):
        raise result
    return result


def child_main() -> None:
    """The child's side of measure_llama: the request on stdin, the result (or the MtprunError) on
    stdout; anything llama.cpp prints to stdout goes to stderr instead."""
    config, n_ctx, prefill_ids, prompt_ids, eog, progress_on, gpu = pickle.loads(sys.stdin.buffer.read())
    result_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        result = _measure_llama(config, n_ctx, prefill_ids, prompt_ids, eog, Progress(progress_on), gpu)
    except MtprunError as exc:
        result = exc
    with os.fdopen(result_fd, "wb") as out:
        out.write(pickle.dumps(result))


def _measure_llama(config: BenchConfig, n_ctx: int, prefill_ids: list[int], prompt_ids: list[list[int]],
                   eog: frozenset[int], progress: Progress, gpu: bool) -> dict:
    """llama.cpp's plain prefill and one-token-per-step greedy decode on the same ids, file and threads
    (every layer offloaded when ours ran on a GPU; the GPU llama.cpp uses is the one it was built for)."""
    llama_cpp = import_llama_cpp()
    progress.update("loading the model in llama.cpp", force=True)
    llm = llama_cpp.Llama(config.model, n_ctx=n_ctx, n_batch=PREFILL_BATCH, n_ubatch=PREFILL_BATCH,
                          n_threads=config.threads, n_threads_batch=config.threads,
                          n_gpu_layers=-1 if gpu else 0, verbose=False)
    try:
        n_vocab = llm.n_vocab()

        def last_logits() -> np.ndarray:
            return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))

        def prefill() -> None:
            llm.eval(prefill_ids)
            llama_cpp.llama_synchronize(llm.ctx)

        times = []
        for r in range(config.repetitions + 1):
            progress.update(f"llama.cpp prefill {len(prefill_ids)} tokens, run {r + 1}/{config.repetitions + 1}", force=True)
            llm.reset()
            times.append(timed(prefill))
        prefill_s = best_after_warm_up(times)

        trunk_s = _forward_costs(llama_cpp, llm, prompt_ids[0], max(config.depths) + 1, config.repetitions, progress)

        generated, decode_s = 0, 0.0
        for i, ids in enumerate(prompt_ids):
            runs = []  # (seconds, tokens): the fastest of the repetitions is kept, as for ours
            for r in range(config.repetitions):
                llm.reset()
                if len(ids) > 1:
                    llm.eval(ids[:-1])
                last, n = ids[-1], 0
                t0 = time.perf_counter()
                for j in range(config.n_gen):  # as our decode loop: each step evaluates the last token, picks the next
                    llm.eval([last])
                    last = int(np.argmax(last_logits()))
                    n += 1
                    progress.update(f"llama.cpp decode prompt {i + 1}/{len(prompt_ids)}, run {r + 1}/{config.repetitions}: "
                                    f"{j + 1}/{config.n_gen} tokens")
                    if last in eog:
                        break
                runs.append((time.perf_counter() - t0, n))
            seconds, n = min(runs)
            decode_s += seconds
            generated += n
    finally:
        llm.close()
    return {
        "version": llama_cpp.__version__,
        "mode": "plain prefill and decode through llama-cpp-python",
        "threads": config.threads,
        "gpu_offload": gpu,
        "prefill_tokens_per_s": len(prefill_ids) / prefill_s,
        "decode_tokens_per_s": generated / decode_s,
        "tokens": generated,
        "peak_rss_mib": peak_rss_mib(),  # of llama.cpp's own process
        "trunk_seconds": trunk_s,
        "mtp": None,
    }


def _forward_costs(llama_cpp, llm, ids: list[int], max_k: int, reps: int, progress: Progress) -> list[float]:
    """llama_decode of k = 1..max_k tokens (every row's logits, as a verify needs) after the first prompt,
    the best of its runs: what bench's `costs` measure of ours. Each size runs a few times in a row
    (the first after another size pays for the switch); the prompt is evaluated again before each
    round, as its recurrent state cannot be trimmed back to it."""
    past, last = (ids[:-1] or ids), ids[-1]
    batch = llama_cpp.llama_batch_init(max_k, 0, 1)
    best = [float("inf")] * max_k
    try:
        for r in range(max(reps, 1) * 3):
            progress.update(f"llama.cpp costs: forwards of 1..{max_k} tokens, round {r + 1}/{max(reps, 1) * 3}", force=True)
            llm.reset()
            llm.eval(past)
            pos = len(past)
            for k in range(1, max_k + 1):
                for _ in range(COST_RUNS_IN_A_ROW):
                    batch.n_tokens = k
                    for i in range(k):
                        batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = last, pos + i, 1, 1
                        batch.seq_id[i][0] = 0
                    t0 = time.perf_counter()
                    if llama_cpp.llama_decode(llm.ctx, batch) != 0:
                        raise MtprunError(f"llama.cpp could not decode a batch of {k} tokens while measuring its costs.")
                    llama_cpp.llama_synchronize(llm.ctx)
                    best[k - 1] = min(best[k - 1], time.perf_counter() - t0)
                    pos += k
    finally:
        llama_cpp.llama_batch_free(batch)
    return best


def measure_llama_mtp(config: BenchConfig, program: str, n_ctx: int, gpu: bool, progress: Progress) -> list[dict]:
    """llama.cpp's draft-mtp decoding at each of our fixed depths >= 1: greedy, n_gen tokens per prompt,
    the fastest of the repetitions per prompt, tokens/s over all prompts, and its acceptance."""
    rows = []
    for depth in (d for d in config.depths if d > 0):
        tokens, seconds, drafted, accepted = 0, 0.0, 0, 0
        for i, prompt in enumerate(config.prompts):
            runs = []
            for r in range(config.repetitions):
                progress.update(f"llama.cpp draft-mtp depth {depth}, prompt {i + 1}/{len(config.prompts)}, "
                                f"run {r + 1}/{config.repetitions}", force=True)
                runs.append(_speculative_simple(program, config, prompt, depth, n_ctx, gpu))
            best = min(runs, key=lambda run: run["seconds"] / run["tokens"])
            tokens += best["tokens"]
            seconds += best["seconds"]
            drafted += best["drafted"]
            accepted += best["accepted"]
        rows.append({"depth": depth, "decode_tokens_per_s": tokens / seconds, "tokens": tokens,
                     "acceptance_rate": accepted / drafted if drafted else None})
    return rows


def _speculative_simple(program: str, config: BenchConfig, prompt: BenchPrompt, depth: int, n_ctx: int,
                        gpu: bool) -> dict:
    """One run of llama-speculative-simple; its own decode timer (prompt encoding excluded). Its log
    is written by a thread that can lose the closing lines at exit (seen on a busy machine, exit 0):
    such a run is repeated, up to MTP_RUN_ATTEMPTS times."""
    argv = [program, "-m", config.model, "--spec-type", "draft-mtp", "--spec-draft-n-max", str(depth),
            "-p", prompt.text, "-n", str(config.n_gen), "-c", str(n_ctx), "-b", str(PREFILL_BATCH),
            "--temp", "0", "--top-k", "1", "--seed", "1", "-t", str(config.threads), "-tb", str(config.threads),
            "-ngl", "999" if gpu else "0"]
    for _ in range(MTP_RUN_ATTEMPTS):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=MTP_RUN_TIMEOUT_S)
        except FileNotFoundError:
            raise MtprunError(f"--llama-mtp: no program at {program} (give the path of llama.cpp's llama-speculative-simple).") from None
        except (PermissionError, OSError) as exc:
            raise MtprunError(f"--llama-mtp: cannot run {program} ({exc.strerror or exc}).") from None
        except subprocess.TimeoutExpired:
            raise MtprunError(f"--llama-mtp: {program} ran past {MTP_RUN_TIMEOUT_S} s on prompt {prompt.name!r}.") from None
        output = done.stdout + done.stderr
        decoded = _DECODED.search(output)
        counters = dict((name, int(n)) for name, n in _COUNTER.findall(output))
        if done.returncode == 0 and decoded and set(counters) == {"drafted", "accept"} and int(decoded[1]) > 0:
            return {"tokens": int(decoded[1]), "seconds": float(decoded[2]),
                    "drafted": counters["drafted"], "accepted": counters["accept"]}
        if done.returncode != 0:
            break
    last = next((line for line in reversed(output.strip().splitlines()) if line.strip()), "no output")
    raise MtprunError(f"--llama-mtp: {program} failed at depth {depth} on prompt {prompt.name!r} "
                      f"(exit {done.returncode}): {last.strip()}")


def add_ratios(ours: dict, llama: dict) -> None:
    """ours / llama.cpp beside each of our figures: against its plain decode, and against its draft-mtp
    decode at the same depth where that was measured."""
    pre = ours["prefill"]
    pre["vs_llama_cpp"] = {
        "mtp_off": pre["mtp_off_tokens_per_s"] / llama["prefill_tokens_per_s"],
        "mtp_on": pre["mtp_on_tokens_per_s"] / llama["prefill_tokens_per_s"] if pre["mtp_on_tokens_per_s"] else None,
    }
    mtp = {row["depth"]: row for row in llama["mtp"] or []}
    t = llama["trunk_seconds"]
    for row in ours["depths"]:
        row["vs_llama_cpp"] = row["decode_tokens_per_s"] / llama["decode_tokens_per_s"]
        if row["depth"] != "auto" and row["depth"] < len(t):
            row["llama_cpp_verify_decode_ratio"] = t[row["depth"]] / t[0]
        if row["depth"] in mtp:
            row["vs_llama_cpp_mtp"] = row["decode_tokens_per_s"] / mtp[row["depth"]]["decode_tokens_per_s"]
    for row in mtp.values():
        row["speedup_over_plain"] = row["decode_tokens_per_s"] / llama["decode_tokens_per_s"]
