"""Export to deployment formats, each export checked against the eager model and timed.

Formats: TorchScript (``.pt``, or the mobile lite-interpreter ``.ptl``), ONNX (opset 17 by
default), ExecuTorch (``.pte``, XNNPACK), Core ML (``.mlpackage``) and TFLite / LiteRT
(``.tflite``). Every export writes its file atomically plus a JSON report.
"""

from .core import ExportError, ExportReport, export_model

__all__ = ["ExportError", "ExportReport", "export_model"]
