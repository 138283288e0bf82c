"""Layer 5: operations built on the public API (convert, check, ...). They return result objects,
report progress through a callback and never print."""

from __future__ import annotations

from .check import CheckReport, Finding, RepairAction, check
from .convert import ConvertResult, convert
from .progress import Progress, ProgressCallback, ProgressReporter
from .result import OperationResult

__all__ = ["CheckReport", "ConvertResult", "Finding", "OperationResult", "Progress", "ProgressCallback",
           "ProgressReporter", "RepairAction", "check", "convert"]
