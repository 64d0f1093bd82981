"""Loaded by every Python process started with this folder on PYTHONPATH (bench/adversarial.py puts it
there for edge): with BENCH_ROUNDS_LOG set, trio.run logs its long rounds there (bench/rounds.py).
Through the environment, so that edge's workers, which the supervisor starts, log theirs too."""

import os

if os.environ.get("BENCH_ROUNDS_LOG"):
    from bench.rounds import install

    install(os.environ["BENCH_ROUNDS_LOG"])
