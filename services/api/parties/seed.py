"""What every party service starts from: the chain's configuration and the population, as one file.

``ccsim serve`` turns a scenario into a :class:`PartySeed` (``sim/live/serve.py``) and writes it as
JSON into the data directory; each party process reads the same file (``CCSIM_SEED_FILE``), so
all of them agree on who exists and which bank each party uses, without asking each other at
start-up. The services never import the simulation: this module is the whole contract.

Each party books only its own side of the opening state (:mod:`services.flows.opening`), with the
same ids the in-process chain uses, so the halves reconcile.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Final

from pydantic import TypeAdapter

from services.contracts import CardholderSpec, MerchantSpec
from services.flows import ChainConfig, Topology
from services.money import DEFAULT_ASSETS, Asset, AssetRegistry

__all__ = ["PartySeed", "read_seed", "seed_topology", "write_seed"]

SEED_VERSION: Final = 1


@dataclass(frozen=True)
class PartySeed:
    """The chain's knobs, the assets, the opening prices and the population of one live run."""

    config: ChainConfig = field(default_factory=ChainConfig)
    assets: tuple[Asset, ...] = DEFAULT_ASSETS
    prices_kzt: dict[str, Decimal] = field(default_factory=dict)  # mid price per traded asset
    cardholders: tuple[CardholderSpec, ...] = ()
    merchants: tuple[MerchantSpec, ...] = ()
    deadline_ms: int = 10_000  # how long the network waits for the issuer before it stands in
    version: int = SEED_VERSION

    def registry(self) -> AssetRegistry:
        return AssetRegistry(self.assets)


_ADAPTER: Final = TypeAdapter(PartySeed)


def write_seed(seed: PartySeed, path: Path) -> None:
    """Write ``seed`` as JSON (Decimals as strings, so no price passes through a float)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(_ADAPTER.dump_json(seed, indent=1))
    tmp.replace(path)


def read_seed(path: Path) -> PartySeed:
    seed = _ADAPTER.validate_json(path.read_bytes())
    if seed.version != SEED_VERSION:
        raise ValueError(f"{path}: seed version {seed.version}, this build reads {SEED_VERSION}")
    return seed


def seed_topology(seed: PartySeed) -> Topology:
    """Who banks where in this run: the same assignment the in-process chain makes."""
    return Topology(seed.config, seed.cardholders, seed.merchants)


def seed_json(seed: PartySeed) -> str:
    """The seed as canonical JSON text (tests compare seeds with it)."""
    return json.dumps(json.loads(_ADAPTER.dump_json(seed)), sort_keys=True)
