"""The repository config object: id, format version and parameters (docs/design.md, config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from chunker import ChunkerError, ChunkerParams
from repo.blob import DEFAULT_LEVEL
from repo.errors import DamagedObject
from repo.pack import DEFAULT_PACK_SIZE

FORMAT_VERSION = 1
# The in-memory index keeps offsets in 32 bits (docs/design.md, index in memory).
MIN_PACK_SIZE = 1
MAX_PACK_SIZE = 1 << 30


@dataclass(frozen=True, slots=True)
class RepoConfig:
    """Everything a client must know to read and write the repository."""

    repo_id: str
    chunker: ChunkerParams = field(default_factory=ChunkerParams)
    pack_size: int = DEFAULT_PACK_SIZE
    compression: str = "zstd"
    compression_level: int = DEFAULT_LEVEL
    version: int = FORMAT_VERSION
    features: tuple[str, ...] = ()


def config_fields(cfg: RepoConfig) -> dict[str, Any]:
    """The config as its stored map (docs/design.md, config)."""
    return {
        "version": cfg.version,
        "id": cfg.repo_id,
        "chunker": cfg.chunker.to_dict(),
        "pack_size": cfg.pack_size,
        "compression": {"algorithm": cfg.compression, "level": cfg.compression_level},
        "features": list(cfg.features),
    }


def encode_config(cfg: RepoConfig) -> bytes:
    data: bytes = msgpack.packb(config_fields(cfg), use_bin_type=True)
    return data


def decode_config(plain: bytes) -> RepoConfig:
    try:
        doc: dict[str, Any] = msgpack.unpackb(plain, raw=False)
        if doc["version"] != FORMAT_VERSION:
            raise DamagedObject(f"config: unsupported repository version {doc['version']}")
        if doc["features"]:
            raise DamagedObject(f"config: unsupported features {doc['features']}")
        comp = doc["compression"]
        if comp["algorithm"] != "zstd":
            raise DamagedObject(f"config: unknown compression {comp['algorithm']!r}")
        pack_size = int(doc["pack_size"])
        if not MIN_PACK_SIZE <= pack_size <= MAX_PACK_SIZE:
            raise DamagedObject(f"config: pack size {pack_size} out of range")
        return RepoConfig(
            repo_id=str(doc["id"]),
            chunker=ChunkerParams.from_dict(doc["chunker"]),
            pack_size=pack_size,
            compression=comp["algorithm"],
            compression_level=int(comp["level"]),
        )
    except (KeyError, TypeError, ValueError, ChunkerError, msgpack.UnpackException) as exc:
        raise DamagedObject("config: malformed") from exc
