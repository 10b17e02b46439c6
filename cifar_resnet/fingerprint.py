"""What a run's weights were trained with, kept in their metadata: a fingerprint of the run's config.yaml
(`config_sha256`: the SHA-256 of its values, not its formatting), so that `evaluate` and `record` find a
configuration changed after training instead of building another network (or reporting another recipe)
around the weights. Weights saved before the fingerprint existed carry none and pass."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from .files import read_run_file

KEY = "config_sha256"
_HEADER_MAX = 100_000_000  # bytes of a safetensors header (the library's own limit)


def config_sha256(path: Path) -> str | None:
    """The fingerprint of the configuration file `path`, or None where it is absent or no YAML mapping."""
    try:
        values = yaml.safe_load(read_run_file(path))
    except (OSError, RuntimeError, yaml.YAMLError, UnicodeDecodeError):
        return None
    if not isinstance(values, dict):
        return None
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def weights_metadata(path: Path) -> dict[str, str]:
    """The metadata of the safetensors file `path` (its header only is read), or {} where it has none."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size)) if 0 < size <= _HEADER_MAX else {}
    except (OSError, ValueError):
        return {}
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def config_changed(config: Path, weights: Path) -> bool:
    """Whether the weights at `weights` carry a fingerprint that the configuration at `config` no longer has."""
    kept = weights_metadata(weights).get(KEY)
    return kept is not None and kept != config_sha256(config)
