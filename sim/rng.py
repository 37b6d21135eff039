"""Named random streams: one seed per run, one independent generator per component.

A stream is derived from the run's seed and a stable hash of its *name*
(``SeedSequence(seed, spawn_key=(hash(name),))``), not from the order streams are created in, so
adding a component (or a merchant category) never changes the draws of another: the arrival times
of a scenario stay the same when its merchants change. No global RNG is ever seeded (Mesa's lesson).
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["Streams", "stable_hash"]


def stable_hash(name: str) -> int:
    """A 64-bit hash of ``name`` that is the same in every process and Python version."""
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "big")


class Streams:
    """The run's random streams, by name: ``streams["arrivals"]``, ``streams["latency.issuer"]``."""

    def __init__(self, seed: int) -> None:
        if seed < 0:
            raise ValueError("a seed must not be negative")
        self.seed = seed
        self._cache: dict[str, np.random.Generator] = {}

    def sequence(self, name: str) -> np.random.SeedSequence:
        return np.random.SeedSequence(self.seed, spawn_key=(stable_hash(name),))

    def __getitem__(self, name: str) -> np.random.Generator:
        gen = self._cache.get(name)
        if gen is None:
            gen = np.random.Generator(np.random.PCG64(self.sequence(name)))
            self._cache[name] = gen
        return gen
