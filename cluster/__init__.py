"""The driver: config, rollout actors, the SFT and RL loops, evaluation, metrics, the CLI (see README)."""
