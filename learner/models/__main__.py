"""`python -m learner.models NAME [PROMPT]`: load a policy and print its greedy chat reply."""

import sys

import torch

from learner.models import load_policy
from learner.prompt_encoding import encode_prompt


def main(argv: list[str]) -> None:
    """Greedy-decode up to 48 tokens for one user message (default model `tiny`)."""
    name = argv[0] if argv else "tiny"
    prompt = argv[1] if len(argv) > 1 else "Say hello."
    policy = load_policy(name)
    ids = encode_prompt(policy, [{"role": "user", "content": prompt}]).input_ids
    out = policy.model.generate(torch.tensor([ids]), max_new_tokens=48, do_sample=False)  # (1, T)
    print(f"[{policy.name}]", policy.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True))


if __name__ == "__main__":
    main(sys.argv[1:])
