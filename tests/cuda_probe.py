"""Which CUDA queries importing a module makes, asked in a fresh interpreter.

A process hides GPUs it did not reserve by setting CUDA_VISIBLE_DEVICES="" (a Serve replica, a CPU
learner rank); torch reads the variable once, when CUDA is first queried. That is in time only if
no import queried CUDA before, which `cuda_queries_on_import` checks.
"""

import json
import subprocess
import sys
import textwrap

CUDA_QUERIES = ("is_available", "device_count", "init", "_lazy_init", "current_device")
"""The torch.cuda functions that make torch read CUDA_VISIBLE_DEVICES."""


def cuda_queries_on_import(module: str) -> list[str]:
    """The `CUDA_QUERIES` that `import module` calls, in order, in a new Python process."""
    probe = textwrap.dedent(
        f"""
        import json
        import torch
        asked = []
        for name in {CUDA_QUERIES!r}:
            real = getattr(torch.cuda, name)
            setattr(torch.cuda, name, lambda *a, _name=name, _real=real, **k: asked.append(_name) or _real(*a, **k))
        import {module}
        print(json.dumps(asked))
        """
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])
