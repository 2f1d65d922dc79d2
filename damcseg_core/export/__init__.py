"""ONNX export of DAMCSeg and the onnxruntime backend (``docs/deployment.md``)."""

from damcseg_core.export.onnx_export import ALL_SUBSETS, dense_file_name, export_onnx, parse_subset
from damcseg_core.export.parity import ParityReport, compare_outputs
from damcseg_core.export.runtime import OnnxExportError, OnnxRuntimeModel, preferred_providers, read_metadata

__all__ = [
    "ALL_SUBSETS",
    "OnnxExportError",
    "OnnxRuntimeModel",
    "ParityReport",
    "compare_outputs",
    "dense_file_name",
    "export_onnx",
    "parse_subset",
    "preferred_providers",
    "read_metadata",
]
