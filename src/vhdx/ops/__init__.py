"""Layer 5: operations built on the public API (convert, check, ...). They return result objects,
report progress through a callback and never print."""

from __future__ import annotations

from .batch import BatchResult, Job, run_batch
from .check import CheckReport, Finding, RepairAction, check
from .checkpoint import (CheckpointChain, CheckpointDisk, CheckpointResult, create_checkpoint, delete_checkpoint,
                         list_checkpoints, revert_checkpoint)
from .compact import CompactResult, compact
from .convert import ConvertResult, convert
from .merge import MergeResult, merge
from .progress import Progress, ProgressCallback, ProgressReporter
from .result import OperationResult
from .resize import ResizeResult, resize
from .set_parent import SetParentResult, set_parent
from .set_properties import SetResult, set_properties

__all__ = ["CheckReport", "ConvertResult", "Finding", "OperationResult", "Progress", "ProgressCallback",
           "ProgressReporter", "RepairAction", "check", "convert"]
__all__ += ["SetParentResult", "SetResult", "set_parent", "set_properties"]
__all__ += ["CompactResult", "compact"]
__all__ += ["MergeResult", "merge", "CheckpointChain", "CheckpointDisk", "CheckpointResult", "create_checkpoint",
            "delete_checkpoint", "list_checkpoints", "revert_checkpoint"]
__all__ += ["ResizeResult", "resize"]
__all__ += ["BatchResult", "Job", "run_batch"]
