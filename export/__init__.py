"""PyTorch -> ONNX bundle export (torch needed; the worker only reads bundles via ``dreamstream.bundle``)."""
from export.bundle_writer import random_bundle, write_bundle

__all__ = ["random_bundle", "write_bundle"]
