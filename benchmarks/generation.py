"""Generation throughput: transformers one prompt at a time and batched, vLLM, and the job path.

Run from the repository root, e.g.:

    .venv/bin/python benchmarks/generation.py --size tiny --prompts 32 --max-tokens 48

Models are random-init Llama checkpoints built locally (alignment_jobs.tiny_models); the run
uses its own SQLite database in a temporary directory, never the developer's.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SIZES: dict[str, dict[str, int]] = {
    "tiny": {},  # build_tiny_models' defaults: hidden 128, 2 layers, 4 heads
    "small": {"hidden_size": 512, "num_layers": 8, "num_heads": 8, "intermediate_size": 1408},
    "1b": {"hidden_size": 2048, "num_layers": 16, "num_heads": 16, "intermediate_size": 5632},
}
# Peak memory bandwidth in GB/s by GPU name (SXM parts), for the batch-1 decode bound.
BANDWIDTH_GBS = {"H200": 4800.0, "H100": 3350.0}
# Greedy: every row does the same decoding work, and outputs can be compared across rows.
TEMPERATURE = 0.0
TOP_P = 1.0
SPEC_SEED = 0  # GenerationSpec's default, so the bare rows use the job's per-case seeds
CASE_FIELDS = ("stratum", "narrative", "fields", "ground_truth")


@dataclass
class Row:
    name: str
    wall_s: float
    prompts: int
    tokens: int
    stopped: int  # completions that ended on an end token before max_tokens
    latency_s: float  # what one prompt waits: its own call, or the whole batch it rode in

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--size", choices=list(SIZES), default="tiny")
    parser.add_argument("--out", type=Path, help="model dir (default var/bench-models/<size>)")
    parser.add_argument("--engines", default="transformers,vllm")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16"])
    parser.add_argument("--bandwidth-gbs", type=float, help="GPU memory bandwidth in GB/s")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    args.engines = [name.strip() for name in args.engines.split(",") if name.strip()]
    if not args.engines or set(args.engines) - {"transformers", "vllm"}:
        parser.error(f"--engines takes transformers and/or vllm, got {args.engines}")
    if args.prompts < 1 or args.max_tokens < 1:
        parser.error("--prompts and --max-tokens must be at least 1")
    args.out = (args.out or ROOT / "var" / "bench-models" / args.size).resolve()
    return args


def setup_django(var_dir: Path, model_dir: Path) -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="clinic_eval.settings",
        DEBUG="1",
        VAR_DIR=str(var_dir),
        # Set outright: a DATABASE_URL in the developer's shell must not point us at their DB.
        DATABASE_URL=f"sqlite:///{var_dir / 'bench.sqlite3'}",
        MODEL_ROOTS=str(model_dir),
        # One engine at a time: loading vLLM then frees the transformers model (GPU memory).
        GENERATION_ENGINE_CACHE_SIZE="1",
        VLLM_ENABLE_V1_MULTIPROCESSING="0",
        HF_HUB_OFFLINE="1",
    )
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))  # python puts benchmarks/ on sys.path, not the repo root
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def parameter_count(base: Path) -> int:
    from safetensors import safe_open

    total = 0
    for path in base.glob("model*.safetensors"):
        with safe_open(str(path), framework="pt") as weights:
            names = weights.keys()  # a list, not a dict view: safe_open is not a mapping
            total += sum(math.prod(weights.get_slice(name).get_shape()) for name in names)
    return total


def build_prompts(base: Path, cases: Sequence[dict]) -> tuple[list[Any], list[str]]:
    """Engine requests and prompt texts, rendered the way alignment_jobs.services renders them."""
    from transformers import AutoTokenizer

    from alignment_jobs import engines, prompts
    from clinic_eval.vocabulary import DEFAULT_DECISION_LAYERS

    tokenizer = AutoTokenizer.from_pretrained(base)
    requests, texts = [], []
    for index, row in enumerate(cases, start=1):
        fields = {key: row[key] for key in CASE_FIELDS}
        case = prompts.CaseData(id=index, external_id=row["case_id"], **fields)
        rendered = prompts.build_messages(
            case,
            system_prompt=prompts.DEFAULT_SYSTEM_PROMPT,
            user_template=prompts.DEFAULT_USER_TEMPLATE,
            layers=DEFAULT_DECISION_LAYERS,
        )
        text = tokenizer.apply_chat_template(
            rendered.messages, tokenize=False, add_generation_prompt=True
        )
        seed = prompts.request_seed(SPEC_SEED, row["case_id"])
        requests.append(engines.EngineRequest(engines.encode_prompt(tokenizer, text), seed))
        texts.append(text)
    return requests, texts


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def summarise(name: str, wall: float, outputs: list, latency: float) -> Row:
    choices = [choice for output in outputs for choice in output]
    tokens = sum(choice.completion_tokens for choice in choices)
    stopped = sum(choice.finish_reason == "stop" for choice in choices)
    return Row(name, wall, len(outputs), tokens, stopped, latency)


def forget_prompts(engine: Any) -> None:
    # vLLM's prefix cache would otherwise serve the timed prompts' KV from the previous call,
    # timing decode alone where transformers pays for every prefill.
    if hasattr(engine, "llm") and not engine.llm.reset_prefix_cache():
        raise SystemExit("vLLM refused to reset its prefix cache; timings would be skewed")


def bare_rows(
    name: str, args: argparse.Namespace, requests: list, loads: dict[str, str]
) -> tuple[Any, list[Row]]:
    """Load the engine (timed on its own), then its rows; the engine is returned for later."""
    from django.test import override_settings

    from alignment_jobs import engines

    seconds, engine = timed(
        lambda: engines.engine_for(
            name=name, base=str(args.out / "base"), dtype=args.dtype, tensor_parallel_size=1
        )
    )
    model = engine.model if name == "transformers" else engine.llm.llm_engine.model_config
    loads[name] = f"{seconds:.2f} s, {engine.version}, {str(model.dtype).removeprefix('torch.')}"
    sampling = engines.Sampling(TEMPERATURE, TOP_P, args.max_tokens, 1)
    # Warm-ups only pay for first-call set-up (allocator, kernels), so a few tokens do.
    warm = engines.Sampling(TEMPERATURE, TOP_P, min(args.max_tokens, 8), 1)
    rows = []
    if name == "transformers":
        engine.generate(requests[:1], warm)
        latencies, outputs = [], []
        for request in requests:
            seconds, output = timed(lambda r=request: engine.generate([r], sampling))
            latencies.append(seconds)
            outputs += output
        wall = sum(latencies)
        rows.append(summarise("transformers, one at a time", wall, outputs, wall / len(requests)))
    with override_settings(TRANSFORMERS_BATCH_SIZE=len(requests)):
        engine.generate(requests, warm)
        forget_prompts(engine)
        wall, outputs = timed(lambda: engine.generate(requests, sampling))
    rows.append(summarise(f"{name}, batched", wall, outputs, wall))
    return engine, rows


def job_row(
    name: str, engine: Any, args: argparse.Namespace, cases: list, texts: list
) -> tuple[Row, float]:
    """DB rows, then job_launch + shard_run as a worker runs them; also engine.generate's time."""
    from django.test import override_settings

    from alignment_jobs.generation import jobs, shards, specs
    from alignment_jobs.prompts import sha256_text
    from clinic_eval.models import Arm, Case, Response, User
    from clinic_eval.studies import services

    user = services.user_create(
        username="bench", password=secrets.token_urlsafe(), role=User.Role.COORDINATOR
    )
    study = services.study_create(title="Generation benchmark", created_by=user)
    Case.objects.bulk_create(
        Case(study=study, external_id=row["case_id"], **{key: row[key] for key in CASE_FIELDS})
        for row in cases
    )
    arm = services.arm_create(study=study, label="Model A", kind=Arm.Kind.MODEL)
    specs.spec_save(
        arm=arm,
        base_model_path=str(args.out / "base"),
        max_tokens=args.max_tokens,
        temperature=TEMPERATURE,
        top_p=TOP_P,
        dtype=args.dtype,
        seed=SPEC_SEED,
    )
    n = len(cases)
    forget_prompts(engine)
    with override_settings(TRANSFORMERS_BATCH_SIZE=n):
        started = time.perf_counter()
        job = jobs.job_launch(
            study=study, created_by=user, engine=name, shard_size=n, enqueue=False
        )
        for shard_id in job.shards.order_by("index").values_list("pk", flat=True):
            outcome = shards.shard_run(shard_id=shard_id)
            if outcome.errors:
                raise SystemExit(f"shard {shard_id} failed: {outcome.errors[:3]}")
        wall = time.perf_counter() - started
    stored = list(Response.objects.filter(arm=arm).values_list("provenance", flat=True))
    assert len(stored) == n, f"{len(stored)} responses stored, expected {n}"
    # The job must have rendered exactly the prompts the bare rows timed.
    assert {prov["prompt_sha256"] for prov in stored} == set(map(sha256_text, texts))
    tokens = sum(prov["completion_tokens"] for prov in stored)
    stopped = sum(prov["finish_reason"] == "stop" for prov in stored)
    engine_s = sum(job.shards.values_list("engine_seconds", flat=True))
    return Row(f"job path ({name})", wall, n, tokens, stopped, wall), engine_s


def context(args: argparse.Namespace, params: int, prompt_tokens: list[int]) -> dict[str, Any]:
    import torch
    import transformers

    cuda = torch.cuda.is_available()
    mean_prompt = sum(prompt_tokens) / len(prompt_tokens)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch threads {torch.get_num_threads()}",
        "device": f"cuda ({torch.cuda.get_device_name(0)})" if cuda else "cpu",
        "versions": f"python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}",
        "model": f"{args.size}: {params:,} parameters, random init, {args.out / 'base'}",
        "prompts": f"{args.prompts} synthetic cases, mean {mean_prompt:.0f} prompt tokens",
        "max_tokens": args.max_tokens,
        "sampling": f"greedy (temperature {TEMPERATURE}), top_p {TOP_P}",
    }


def gpu_bandwidth(args: argparse.Namespace) -> float:
    import torch

    if not torch.cuda.is_available():
        return 0.0
    gpu = torch.cuda.get_device_name(0)
    gbs = args.bandwidth_gbs or next((v for k, v in BANDWIDTH_GBS.items() if k in gpu), 0.0)
    if not gbs:
        raise SystemExit(f"unknown GPU {gpu!r}: give its bandwidth with --bandwidth-gbs")
    return gbs


def bandwidth_note(gbs: float, engine: Any, single: Row) -> str:
    # Batch-1 decode reads every weight once per token, so bandwidth caps its tokens/s.
    weight_bytes = sum(p.numel() * p.element_size() for p in engine.model.parameters())
    bound = gbs * 1e9 / weight_bytes
    return (
        f"bandwidth {gbs:.0f} GB/s, transformers weights {weight_bytes / 1e9:.2f} GB -> batch-1 "
        f"decode bound {bound:.0f} tok/s; one at a time reaches {single.tokens_per_s / bound:.1%}"
    )


def report(ctx: dict, rows: list[Row], notes: list[str]) -> None:
    for key, value in ctx.items():
        print(f"{key:<18} {value}")
    print(f"\n{'row':<28} {'wall s':>8} {'tokens':>7} {'stopped':>7} {'tok/s':>9}", end="")
    print(f" {'ms/prompt':>10} {'latency ms':>11}")
    for row in rows:
        print(
            f"{row.name:<28} {row.wall_s:>8.2f} {row.tokens:>7} {row.stopped:>7} "
            f"{row.tokens_per_s:>9.1f} {row.wall_s / row.prompts * 1e3:>10.1f} "
            f"{row.latency_s * 1e3:>11.1f}"
        )
    print("\n" + "\n".join(notes))


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-generation-") as var_dir:
        setup_django(Path(var_dir), args.out)
        from alignment_jobs.demo.tiny_models import build_tiny_models
        from clinic_eval.synthetic import generate_cases

        gbs = gpu_bandwidth(args)  # before the long part, so a missing flag fails fast
        build_tiny_models(args.out, adapter_names=(), **SIZES[args.size])
        params = parameter_count(args.out / "base")
        print(f"model {args.out / 'base'}: {params:,} parameters")
        cases = generate_cases(n=args.prompts, seed=1)
        requests, texts = build_prompts(args.out / "base", cases)
        ctx = context(args, params, [len(r.token_ids) for r in requests])
        loads: dict[str, str] = {}
        rows: list[Row] = []
        notes = [
            "ms/prompt = wall / prompts; latency = what one prompt waits (its own call, or the "
            "whole batch).",
            "stopped = completions ended by an end token; tok/s counts tokens actually generated.",
        ]
        # transformers first: with an engine cache of one, loading vLLM evicts it, and the job
        # path then reuses whichever engine was loaded last.
        engine = None
        if "transformers" in args.engines:
            engine, rows = bare_rows("transformers", args, requests, loads)
            if gbs:
                notes.append(bandwidth_note(gbs, engine, rows[0]))
        if "vllm" in args.engines and not importlib.util.find_spec("vllm"):
            notes.append("skipped vllm: it is not importable in this environment")
        elif "vllm" in args.engines:
            engine = None  # let the cache's eviction actually free the transformers model
            engine, vllm_rows = bare_rows("vllm", args, requests, loads)
            rows += vllm_rows
        if engine is not None:
            name = "vllm" if "vllm" in loads else "transformers"
            job, engine_s = job_row(name, engine, args, cases, texts)
            bare = next(row for row in rows if row.name == f"{name}, batched")
            rows.append(job)
            outside = (job.wall_s - engine_s) / job.prompts * 1e3
            notes.append(
                f"job path / bare {name} batched call = {job.wall_s / bare.wall_s:.2f}x; the "
                "engine was already loaded (engine_for caches it), so the difference is DB "
                "writes, prompt building and postprocessing, not model load. Inside the job, "
                f"engine.generate took {engine_s:.2f} s; the rest is {outside:.1f} ms/prompt."
            )
        ctx.update({f"load {name}": value for name, value in loads.items()})
        if len({value.rsplit(", ", 1)[1] for value in loads.values()}) > 1:
            notes.append(
                "the engines ran in different dtypes: --dtype bfloat16 compares like for like"
            )
        report(ctx, rows, notes)
        if args.json:
            rows_json = [{**asdict(row), "tokens_per_s": row.tokens_per_s} for row in rows]
            result = {"context": ctx, "rows": rows_json, "notes": notes}
            args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
