"""`hawk bench` as data: pruned vs unpruned through the same engine loop, with stock `generate` and a downscaled
image beside them. Never prints; returns records (one per variant) that the CLI renders.

Variants, per batch size and ratio, run interleaved in one process on the same inputs:
  unpruned        hawk's loop at ratio 0 (the baseline every ratio is taken against)
  pruned          hawk's loop at the ratio (HAWK scoring, compaction, post-pruning static cache)
  downscaled      hawk's loop at ratio 0 on the image shrunk (max_pixels) to the pruned run's visual-token count
  stock_generate  the model's own `generate` on the unpruned prompt (what users run today)
  run_path        exactly what `hawk run` executes at the ratio: the session's own decode step (CUDA graphs
                  on CUDA, captured on its first call, never compiled), inputs prepared from the images, and the
                  end-of-sequence watch running (with an id the model never produces, so lengths stay forced)
Times are host clocks around device work with synchronisation at every phase boundary; memory is the CUDA
allocator's peak (or the process's resident-set high-water mark on CPU) above what was allocated before.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hawk_cli.adapters import adapter_class
from hawk_cli.engine.decode_step import NO_EOS, DecodeStep
from hawk_cli.engine.generation import GenerationSettings, generate
from hawk_cli.engine.selection import keep_count, validate_ratio
from hawk_cli.engine.session import HawkSession, versions
from hawk_cli.engine.timing import PhaseTimer, synchronize
from hawk_cli.errors import InputError, UsageError
from hawk_cli.io.models import LoadedModel, builtin_dir, resolve_device, resolve_dtype
from hawk_cli.io.placement import (
    first_device,
    input_device,
    model_devices,
    random_spread_model,
    read_device_map,
    require_accelerate,
)
from hawk_cli.io.requests import Request
from hawk_cli.tasks.oracle import OracleReport, check_against_oracle

SCHEMA = "hawk.bench/1"
RANDOM_WEIGHTS_NOTE = "random weights: speed and memory only"
CONFIG_DIR = Path(__file__).resolve().parent.parent / "data" / "configs"
DEFAULT_QUESTION = "what color is the circle ?"
VARIANTS = ("unpruned", "pruned", "downscaled", "stock_generate", "run_path")
# Metrics kept per run; each becomes {median, min, max} and a ratio to the unpruned baseline.
TIME_METRICS = (
    "inputs_ms",
    "vision_ms",
    "scoring_ms",
    "prefill_ms",
    "ttft_ms",
    "decode_ms_per_token",
    "total_ms",
    "tokens_per_s",
)
MEMORY_METRICS = ("peak_prefill_bytes", "peak_run_bytes")


def named_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


@dataclass(frozen=True)
class BenchSettings:
    ratios: tuple[float, ...] = (0.8,)
    batches: tuple[int, ...] = (1, 8)
    size: int = 1008  # side of the synthetic square image when no --image is given
    max_new_tokens: int = 16
    warmup: int = 2
    repeats: int = 5
    compile: bool | None = None  # None: compiled decode on CUDA; else the session's decode mode
    question: str = DEFAULT_QUESTION
    stock: bool = True
    downscaled: bool = True
    run_path: bool = True

    def __post_init__(self) -> None:
        for ratio in self.ratios:
            validate_ratio(ratio)
        if not self.ratios or any(r == 0 for r in self.ratios):
            raise UsageError("bench needs ratios above 0 (the unpruned baseline always runs)", "Use e.g. 0.8")
        if not self.batches or min(self.batches) < 1:
            raise UsageError(f"batch sizes must be at least 1, got {list(self.batches)}", "Use e.g. {batch_size=}1,8")
        if self.max_new_tokens < 2:
            raise UsageError(
                f"must be at least 2 for a bench (one decode step), got {self.max_new_tokens}",
                "Use e.g. 16",
                setting="max_new_tokens",
            )
        if self.repeats < 1:
            raise UsageError(f"must be at least 1, got {self.repeats}", "Use e.g. {repeats=}5", setting="repeats")
        if self.warmup < 0:
            raise UsageError(f"must be at least 0, got {self.warmup}", "Use e.g. {warmup=}2", setting="warmup")
        if not 56 <= self.size <= 4096:
            raise UsageError(f"must be in [56, 4096], got {self.size}", "Use e.g. {size=}1008", setting="size")


# --- model sources -----------------------------------------------------------------------------------------
def resolve_config(spec: str) -> Path:
    """A shipped config name (a file in data/configs, e.g. qwen2.5-vl-7b or qwen3-vl-8b), a config.json file, a
    model folder, or builtin."""
    if spec == "builtin":
        return builtin_dir() / "config.json"
    named = CONFIG_DIR / f"{spec}.json"
    if named.is_file():
        return named
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path / "config.json"
    if path.is_file():
        return path
    raise UsageError(f"unknown config '{spec}'", f"Use one of {', '.join(named_configs())} or a config.json file")


def random_weight_session(
    config_spec: str, device: str, dtype: str, attn: str, decode: str = "auto", device_map: str | None = None
) -> HawkSession:
    """A model built from a config with random weights, directly on the device, or spread over the devices of
    `device_map` ("auto", "balanced" or a JSON file) by accelerate (speed and memory only)."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoTokenizer

    config_path = resolve_config(config_spec)
    placement = None
    if device_map is not None:
        require_accelerate()
        placement = read_device_map(device_map)
    torch_device = resolve_device(device) if placement is None else first_device(placement)
    torch_dtype = resolve_dtype(dtype, torch_device)
    config = AutoConfig.from_pretrained(str(config_path))
    folder = config_path.parent
    family = adapter_class(str(config.model_type))
    if (folder / "tokenizer_config.json").is_file():  # a checkpoint folder: its own tokenizer and processor
        tokenizer = AutoTokenizer.from_pretrained(str(folder), padding_side="left")
        processor = family.load_image_processor(str(folder))
    else:
        tokenizer, processor = family.standin_processors(config)
    name = f"{config_spec} (random weights)"
    if placement is not None:
        model = random_spread_model(config, torch_dtype, attn, placement)
        loaded = LoadedModel(
            model=model,
            tokenizer=tokenizer,
            image_processor=processor,
            name=name,
            path=str(folder),
            device=input_device(model),
            dtype=torch_dtype,
            attn=attn,
            is_builtin=False,
            devices=model_devices(model),
            device_map=getattr(model, "hf_device_map", None),
        )
        return HawkSession(loaded, decode=decode)
    torch.manual_seed(0)
    with torch.device(torch_device):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch_dtype, attn_implementation=attn)
    loaded = LoadedModel(
        model=model.eval(),
        tokenizer=tokenizer,
        image_processor=processor,
        name=name,
        path=str(folder),
        device=torch_device,
        dtype=torch_dtype,
        attn=attn,
        is_builtin=False,
    )
    return HawkSession(loaded, decode=decode)


# --- inputs --------------------------------------------------------------------------------------------------
def synthetic_image(size: int) -> Image.Image:
    """Deterministic noise: every patch differs, so scores and kept sets are not degenerate."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def batch_requests(images: list[Image.Image], batch: int, question: str) -> list[Request]:
    return [Request(question, (images[row % len(images)],)) for row in range(batch)]


def batch_inputs(session: HawkSession, images: list[Image.Image], batch: int, question: str):
    return session.build_inputs(batch_requests(images, batch, question)).to(session.loaded.device)


# --- measurement ---------------------------------------------------------------------------------------------
class MemoryProbe:
    """Allocated bytes and a resettable peak: the CUDA allocator, or the process's RSS high-water mark on CPU.
    A model spread over GPUs (`devices`): the sums over its GPUs, and each GPU's own figures (`peak_by_device`)."""

    def __init__(self, device: torch.device, devices=None) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.devices = tuple(d for d in (devices or (device,)) if torch.device(d).type == "cuda") or (device,)

    def reset_peak(self) -> None:
        if self.cuda:
            for device in self.devices:
                torch.cuda.reset_peak_memory_stats(device)
        else:
            with contextlib.suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)

    def current(self) -> int:
        if self.cuda:
            return sum(torch.cuda.memory_allocated(device) for device in self.devices)
        return _proc_status_kb("VmRSS") * 1024

    def peak(self) -> int:
        """The sum of each GPU's own peak (an upper bound on the peak of the sum)."""
        if self.cuda:
            return sum(torch.cuda.max_memory_allocated(device) for device in self.devices)
        return _proc_status_kb("VmHWM") * 1024

    def peak_by_device(self) -> dict[str, int]:
        """Each GPU's peak allocated bytes since the last reset (the process's high-water mark on a CPU)."""
        if self.cuda:
            return {str(device): torch.cuda.max_memory_allocated(device) for device in self.devices}
        return {str(self.device): _proc_status_kb("VmHWM") * 1024}


def _proc_status_kb(key: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class MeasuringTimer(PhaseTimer):
    """The engine's phase timer, also recording each phase's memory peak (absolute bytes)."""

    def __init__(self, device: torch.device, probe: MemoryProbe) -> None:
        super().__init__(device, probe.devices if probe.cuda else None)
        self.probe = probe
        self.peaks: dict[str, int] = {}

    @contextmanager
    def phase(self, name: str):
        self._sync()
        self.probe.reset_peak()
        try:
            with super().phase(name):
                yield
        finally:
            self.peaks[name] = max(self.peaks.get(name, 0), self.probe.peak())


def copy_bandwidth(device: torch.device) -> float:
    """Device-to-device copy bandwidth in bytes/s (bytes read + written), measured now."""
    numel = (1 << 28) if device.type == "cuda" else (1 << 23)  # 1 GiB on a GPU, 32 MiB on a CPU
    source = torch.rand(numel, device=device)
    target = torch.empty_like(source)
    copies = 20 if device.type == "cuda" else 5
    target.copy_(source)
    _sync(device)
    start = time.perf_counter()
    for _ in range(copies):
        target.copy_(source)
    _sync(device)
    seconds = time.perf_counter() - start
    del source, target
    return 2 * numel * 4 * copies / seconds


def _sync(device) -> None:
    """Wait for a device, or for every device of a tuple (a model spread over GPUs)."""
    synchronize(device if isinstance(device, tuple) else (device,))


@dataclass
class Runs:
    """Repeated measurements of one variant."""

    samples: list[dict] = field(default_factory=list)
    first_call_s: float | None = None
    facts: dict = field(default_factory=dict)

    def summary(self) -> dict:
        names = sorted({k for s in self.samples for k, v in s.items() if v is not None})
        return {
            name: {
                "median": statistics.median(s[name] for s in self.samples if s.get(name) is not None),
                "min": min(s[name] for s in self.samples if s.get(name) is not None),
                "max": max(s[name] for s in self.samples if s.get(name) is not None),
            }
            for name in names
        }


class _StepClock:
    """A logits processor that notes when each new token's logits exist (after syncing the model's devices)."""

    def __init__(self, devices: tuple[torch.device, ...]) -> None:
        self.devices, self.times = devices, []

    def __call__(self, input_ids, scores):
        _sync(self.devices)
        self.times.append(time.perf_counter())
        return scores


class Bench:
    """Runs the variants of one model; `run()` returns the records."""

    def __init__(
        self,
        session: HawkSession,
        scorer,
        settings: BenchSettings,
        images: list[Image.Image],
        random_weights: bool,
        progress: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.session, self.scorer, self.settings, self.images = session, scorer, settings, images
        self.random_weights, self.progress = random_weights, progress
        self.device = session.loaded.device
        self.devices = tuple(session.loaded.devices)
        self.probe = MemoryProbe(self.device, self.devices)
        spread = session.adapter.dispatched
        self.compiled = settings.compile if settings.compile is not None else self.device.type == "cuda" and not spread
        if self.compiled and self.device.type != "cuda":
            raise UsageError("a compiled decode step needs a CUDA device", "Turn compilation off on the CPU")
        if self.compiled and spread:
            raise UsageError(
                "a compiled decode step needs the model on one device, and a device map spreads it",
                "Turn compilation off",
            )
        # The engine variants' own step (graphs or compiled); `run_path` uses the session's, as `hawk run` does.
        self.step = DecodeStep(session.adapter, "compile" if self.compiled else session.decode_mode)

    def _label(self, step: DecodeStep) -> str:
        return "compiled" if step.compiled else ("cuda-graphs" if step.captured else "eager")

    @staticmethod
    def _kv_facts(result, kept_length: int) -> dict:
        """The static cache's allocated bytes, and what it holds after prefill (its prompt slots). The conv and
        recurrent states of linear-attention layers (`cache_state_bytes`) have no slots: they count whole."""
        allocated, slots, states = result.kv_cache_bytes, result.kv_cache_slots, result.cache_state_bytes
        per_slot = allocated - states
        return {
            "kv_cache_allocated_bytes": allocated,
            "cache_state_bytes": states,
            "kv_cache_bytes": (per_slot * kept_length // slots if slots else per_slot) + states,
        }

    # one run of each kind -> a flat sample of metrics
    def _engine_run(self, inputs, ratio: float) -> tuple[dict, object]:
        settings = GenerationSettings(
            ratio=ratio, max_new_tokens=self.settings.max_new_tokens, cache="static", compile=self.compiled
        )
        scorer = self.scorer if ratio > 0 else None
        _sync(self.devices)
        start_bytes = self.probe.current()
        timer = MeasuringTimer(self.device, self.probe)
        start = time.perf_counter()
        result = generate(self.session.adapter, inputs, scorer, settings, set(), decode_step=self.step, timer=timer)
        wall = time.perf_counter() - start
        t, n, batch = result.timings, self.settings.max_new_tokens, inputs.batch_size
        kept_length = max(row.prompt_tokens_kept for row in result.rows)
        # A captured or compiled step keeps its static cache between runs (CUDA graphs need fixed addresses):
        # count it here.
        pooled = result.kv_cache_bytes if self.step.mode != "eager" else 0
        sample = {
            "vision_ms": 1e3 * t["vision_s"],
            "scoring_ms": 1e3 * t["scoring_s"],
            "prefill_ms": 1e3 * t["prefill_s"],
            "ttft_ms": 1e3 * t["ttft_s"],
            "decode_ms_per_token": 1e3 * t["decode_s"] / (n - 1),
            "total_ms": 1e3 * wall,
            "tokens_per_s": batch * n / wall,
            "peak_prefill_bytes": max(0, timer.peaks["prefill_s"] - start_bytes) + pooled,
            "peak_run_bytes": max(0, max(timer.peaks.values()) - start_bytes) + pooled,
        }
        facts = {
            "prompt_tokens": max(row.prompt_tokens for row in result.rows),
            "prompt_tokens_kept": kept_length,
            "visual_tokens": [row.visual_tokens for row in result.rows],
            "visual_tokens_kept": [row.visual_tokens_kept for row in result.rows],
            **self._kv_facts(result, kept_length),
            "decode": self._label(self.step),
            "generated_tokens": len(result.tokens[0]),
        }
        if len(self.devices) > 1:
            facts["peak_run_bytes_by_device"] = self.probe.peak_by_device()
        return sample, facts

    def _run_path_run(self, requests: list[Request], ratio: float) -> tuple[dict, dict]:
        """`hawk run`'s call: HawkSession.run from the images, the session's decode step, its default timer."""
        session, n = self.session, self.settings.max_new_tokens
        settings = GenerationSettings(ratio=ratio, max_new_tokens=n)
        _sync(self.devices)
        start_bytes = self.probe.current()
        self.probe.reset_peak()
        start = time.perf_counter()
        output = session.run(requests, self.scorer, settings, eos_ids={NO_EOS})
        _sync(self.devices)
        wall = time.perf_counter() - start
        result, t = output.result, output.result.timings
        step = session.decode_step
        kept_length = max(row.prompt_tokens_kept for row in result.rows)
        pooled = result.kv_cache_bytes if step.mode != "eager" else 0
        peak = max(0, self.probe.peak() - start_bytes) + pooled
        sample = {
            "inputs_ms": 1e3 * t["inputs_s"],
            "vision_ms": 1e3 * t["vision_s"],
            "scoring_ms": 1e3 * t["scoring_s"],
            "prefill_ms": 1e3 * t["prefill_s"],
            "ttft_ms": 1e3 * t["ttft_s"],  # as the other variants: from prepared inputs
            "decode_ms_per_token": 1e3 * t["decode_s"] / (n - 1),
            "total_ms": 1e3 * wall,
            "tokens_per_s": len(requests) * n / wall,
            "peak_run_bytes": peak,
        }
        facts = {
            "prompt_tokens": max(row.prompt_tokens for row in result.rows),
            "prompt_tokens_kept": kept_length,
            "visual_tokens": [row.visual_tokens for row in result.rows],
            "visual_tokens_kept": [row.visual_tokens_kept for row in result.rows],
            **self._kv_facts(result, kept_length),
            "decode": self._label(step),
            "graph_captures": step.captures,
            "generated_tokens": len(result.tokens[0]),
        }
        return sample, facts

    def _stock_run(self, inputs) -> tuple[dict, dict]:
        from transformers import LogitsProcessorList

        model, n = self.session.model, self.settings.max_new_tokens
        clock = _StepClock(self.devices)
        kwargs = self.session.adapter.stock_generate_inputs(inputs)
        _sync(self.devices)
        start_bytes = self.probe.current()
        self.probe.reset_peak()
        start = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(
                **kwargs,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=self.session.adapter.tokens.pad,
                logits_processor=LogitsProcessorList([clock]),
            )
        _sync(self.devices)
        wall = time.perf_counter() - start
        peak = max(0, self.probe.peak() - start_bytes)
        with torch.inference_mode():  # the stock tower alone, for the vision column
            _sync(self.devices)
            vision_start = time.perf_counter()
            self.session.adapter.stock_vision(inputs)
            _sync(self.devices)
            vision = time.perf_counter() - vision_start
        times = clock.times
        sample = {
            "vision_ms": 1e3 * vision,
            "ttft_ms": 1e3 * (times[0] - start),
            "decode_ms_per_token": 1e3 * (times[-1] - times[0]) / max(1, len(times) - 1),
            "total_ms": 1e3 * wall,
            "tokens_per_s": inputs.batch_size * n / wall,
            "peak_run_bytes": peak,
        }
        facts = {
            "prompt_tokens": int(inputs.attention_mask.sum(-1).max()),
            "decode": "stock",
            "generated_tokens": int(output.shape[1] - inputs.input_ids.shape[1]),
        }
        return sample, facts

    def _plan(self, batch: int) -> list[tuple[str, float, Callable[[], tuple[dict, dict]]]]:
        """(variant, ratio, run) for one batch size: the baseline, then each ratio's variants."""
        question, prompts = self.settings.question, self.session.prompts
        full = batch_inputs(self.session, self.images, batch, question)
        plan = [("unpruned", 0.0, lambda: self._engine_run(full, 0.0))]
        if self.settings.stock:
            plan.append(("stock_generate", 0.0, lambda: self._stock_run(full)))
        for ratio in self.settings.ratios:
            plan.append(("pruned", ratio, lambda r=ratio: self._engine_run(full, r)))
            if self.settings.downscaled:
                small = [prompts.downscaled(im, keep_count(prompts.visual_tokens(im), ratio)) for im in self.images]
                shrunk = batch_inputs(self.session, small, batch, question)
                plan.append(("downscaled", ratio, lambda inputs=shrunk: self._engine_run(inputs, 0.0)))
            if self.settings.run_path:
                requests = batch_requests(self.images, batch, question)
                plan.append(("run_path", ratio, lambda r=ratio, q=requests: self._run_path_run(q, r)))
        return plan

    def run(self) -> list[dict]:
        return list(self.iter_records())

    def iter_records(self):
        """Records of each batch size as soon as its rounds are done (so a long run leaves partial results)."""
        environment = self.environment()
        for batch in self.settings.batches:
            plan = self._plan(batch)
            runs = {(name, ratio): Runs() for name, ratio, _ in plan}
            for index in range(self.settings.warmup + self.settings.repeats):
                warm = index < self.settings.warmup
                for name, ratio, call in plan:  # interleaved: every variant once per round
                    self.progress(
                        f"batch {batch}: {name} ratio {ratio:g} ({'warm-up' if warm else 'repeat'} {index + 1})"
                    )
                    start = time.perf_counter()
                    sample, facts = call()
                    entry = runs[(name, ratio)]
                    if entry.first_call_s is None:
                        entry.first_call_s = time.perf_counter() - start
                    entry.facts = facts
                    if not warm:
                        entry.samples.append(sample)
            yield from self._records(batch, runs, environment)

    def _records(self, batch: int, runs: dict, environment: dict) -> list[dict]:
        baseline = runs[("unpruned", 0.0)].summary()
        stock = runs.get(("stock_generate", 0.0))
        stock_summary = stock.summary() if stock else {}
        records = []
        for (name, ratio), entry in runs.items():
            metrics = entry.summary()
            compile_s = None
            if self.settings.warmup and "total_ms" in metrics:
                compile_s = max(0.0, entry.first_call_s - metrics["total_ms"]["median"] / 1e3)
            record = {
                "schema": SCHEMA,
                "variant": name,
                "batch": batch,
                "ratio": ratio,
                "max_new_tokens": self.settings.max_new_tokens,
                "warmup": self.settings.warmup,
                "repeats": self.settings.repeats,
                **entry.facts,
                "metrics": metrics,
                "ratio_to_unpruned": {
                    k: v["median"] / baseline[k]["median"]
                    for k, v in metrics.items()
                    if k in baseline and baseline[k]["median"]
                },
                "ratio_to_stock_generate": {
                    k: v["median"] / stock_summary[k]["median"]
                    for k, v in metrics.items()
                    if k in stock_summary and stock_summary[k]["median"]
                },
                "first_call_s": entry.first_call_s,
                "compile_s": compile_s,
                "compiled_decode": entry.facts.get("decode") == "compiled",
                **self._floor(entry, metrics, environment),
                "environment": environment,
            }
            if self.random_weights:
                record["note"] = RANDOM_WEIGHTS_NOTE
            records.append(record)
        return records

    def _floor(self, entry: Runs, metrics: dict, environment: dict) -> dict:
        """Weight-streaming floor of one decode step: bytes it must read over the copy bandwidth measured now."""
        weights, bandwidth = environment["decoder_weight_bytes"], environment["copy_bandwidth_bytes_per_s"]
        kv = entry.facts.get("kv_cache_allocated_bytes", 0)
        floor_ms = 1e3 * (weights + kv) / bandwidth
        decode = metrics.get("decode_ms_per_token", {}).get("median")
        return {
            "decode_floor_ms": floor_ms,
            "weights_floor_ms": 1e3 * weights / bandwidth,
            "decode_vs_floor": decode / floor_ms if decode else None,
        }

    def environment(self) -> dict:
        loaded = self.session.loaded
        device = self.device
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
        spread = {"devices": [str(d) for d in self.devices], "device_map": loaded.device_map} if loaded.spread else {}
        return {
            "device": str(device),
            "device_name": name,
            **spread,
            **versions(),
            "python": platform.python_version(),
            "dtype": str(loaded.dtype).replace("torch.", ""),
            "attn": loaded.attn,
            "model": loaded.name,
            "scorer": self.scorer.describe() if self.scorer else None,
            "random_weights": self.random_weights,
            "images": [f"{im.width}x{im.height}" for im in self.images],
            "copy_bandwidth_bytes_per_s": copy_bandwidth(device),
            "decoder_weight_bytes": self.session.adapter.decoder_weight_bytes(),
            "weight_bytes": sum(p.numel() * p.element_size() for p in self.session.model.parameters()),
            "cuda_graphs": self.compiled or self.step.captured,
            "decode": self._label(self.step),
            "run_path_decode": self.session.decode_label,
            "torch_threads": torch.get_num_threads(),
        }


# --- the correctness check -----------------------------------------------------------------------------------
def oracle_tolerance(dtype: torch.dtype, logit_scale: float) -> float:
    """Allowed max |Δlogit| against the oracle, relative to the logits' scale (16-bit: ~3 digits)."""
    relative = 1e-4 if dtype == torch.float32 else 5e-2
    return relative * max(1.0, logit_scale)


def run_check(
    session: HawkSession,
    scorer,
    images: list[Image.Image],
    batch: int,
    ratio: float,
    steps: int,
    question: str = DEFAULT_QUESTION,
) -> OracleReport:
    """Prune at `ratio` and compare every step's logits and tokens with the family's oracle (stock generate on the
    whole prompt with the dropped tokens masked out, or on the kept tokens alone; original positions)."""
    import dataclasses

    inputs = batch_inputs(session, images, batch, question)
    if not bool((inputs.input_ids == session.adapter.tokens.image).any()):
        raise InputError("the check needs an image in the prompt", "Give {image} or {size}")
    report = check_against_oracle(session.adapter, inputs, scorer, ratio, steps, session.eos_ids, math.inf)
    return dataclasses.replace(report, tolerance=oracle_tolerance(session.loaded.dtype, report.max_abs_logit))


def to_jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)
