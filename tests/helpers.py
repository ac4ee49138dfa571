"""Shared test helpers (paths, small model factories)."""

from pathlib import Path

from ops.model_config import ModelConfig

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = REPO / "tests" / "data"


def read_key_listing(path: Path) -> dict[str, tuple[list[int], str]]:
    """Parse a ``checkpoint_keys_*.txt`` listing: ``name [shape] dtype`` per line -> {name: (shape, dtype)}."""
    entries = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, rest = line.split(" ", 1)
        shape, dtype = rest.rsplit(" ", 1)
        entries[name] = ([int(s) for s in shape.strip("[]").split(",") if s.strip()], dtype)
    return entries


def released_model_kwargs(modality: str, arch: str, num_class: int = 174, num_segments: int = 8) -> dict:
    """Constructor arguments of the released models (:meth:`ModelConfig.released`: TSM shift 8
    blockres, VAP), random init, no frozen BatchNorm."""
    config = ModelConfig.released(modality, arch, num_class=num_class, num_segments=num_segments)
    return {**config.to_dict(), "partial_bn": False, "pretrain": None}
