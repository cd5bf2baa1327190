"""The learner: model loading, losses, advantages, the DeepSpeed ZeRO-3 engine, checkpoints, export."""
