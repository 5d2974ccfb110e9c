"""Tests of repo/config.py: the config object round trips and refuses what it cannot hold."""

from __future__ import annotations

import msgpack
import pytest

from repo.config import MAX_PACK_SIZE, RepoConfig, config_fields, decode_config, encode_config
from repo.errors import DamagedObject


def test_config_round_trip() -> None:
    """encode_config then decode_config gives the same config."""
    cfg = RepoConfig(repo_id="ab" * 32, pack_size=4 << 20, compression_level=5)
    assert decode_config(encode_config(cfg)) == cfg


def test_pack_size_beyond_the_index_is_refused() -> None:
    """A pack size the in-memory index cannot address (32-bit offsets) is damage."""
    fields = config_fields(RepoConfig(repo_id="ab" * 32))
    fields["pack_size"] = MAX_PACK_SIZE + 1
    with pytest.raises(DamagedObject, match="pack size"):
        decode_config(msgpack.packb(fields, use_bin_type=True))


def test_unknown_version_or_feature_is_refused() -> None:
    """A newer format version or an unknown feature is not read as version 1."""
    for key, value in (("version", 2), ("features", ["future"])):
        fields = config_fields(RepoConfig(repo_id="ab" * 32))
        fields[key] = value
        with pytest.raises(DamagedObject):
            decode_config(msgpack.packb(fields, use_bin_type=True))
