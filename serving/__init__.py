"""The Ray Serve policy endpoint: generation, batching, auth, weight hot-swap (see serving/app.py)."""
