"""Export to deployment formats, each export checked against the eager model and timed.

Formats available now: TorchScript (``.pt``, or the mobile lite-interpreter ``.ptl``) and
ONNX (opset 17 by default). Every export writes its file atomically plus a JSON report.
"""
from .core import ExportError, ExportReport, export_model

__all__ = ["ExportError", "ExportReport", "export_model"]
