"""The deployed transfer model: bundle on disk, frozen backbone, online head."""

from streamapp.model.backbone import Embedder, MLPBackbone
from streamapp.model.bundle import Bundle, Manifest, load_bundle, write_bundle
from streamapp.model.head import OnlineHead, RiverHead, SGDHead, make_head

__all__ = [
    "Bundle",
    "Embedder",
    "MLPBackbone",
    "Manifest",
    "OnlineHead",
    "RiverHead",
    "SGDHead",
    "load_bundle",
    "make_head",
    "write_bundle",
]
