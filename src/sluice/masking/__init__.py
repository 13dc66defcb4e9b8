"""Inline masking of PII and secrets: detectors, scanner, strategies, lineage.

Pure and sans-IO: bytes in, bytes out. Any exception from a masker means the
caller must drop the message and error the client (see `MaskingError`).
"""

from sluice.masking.config import (
    ColumnRuleSpec,
    CustomDetectorSpec,
    DetectorSpec,
    MaskingProfileSpec,
    MaskingSpec,
    NerSpec,
)
from sluice.masking.copy import CopyFormat, CopyMasker
from sluice.masking.detectors import BUILTIN_DETECTORS, Detector, Pattern
from sluice.masking.errors import MaskingConfigError, MaskingError
from sluice.masking.hits import Finding
from sluice.masking.lineage import (
    Catalog,
    OutputColumn,
    StatementLineage,
    StaticCatalog,
    analyze,
    result_lineage,
)
from sluice.masking.masker import Masker, MaskingEngine, RowMasker
from sluice.masking.model import (
    EMPTY_STATS,
    OPAQUE,
    ColumnLineage,
    ColumnOrigin,
    MaskStats,
    ResultColumn,
    TableRef,
)
from sluice.masking.pgtypes import coerce_masked, mask_whole_value
from sluice.masking.scanner import Scanner
from sluice.masking.strategies import Action, Replacer, Strategy

__all__ = [
    "BUILTIN_DETECTORS",
    "EMPTY_STATS",
    "OPAQUE",
    "Action",
    "Catalog",
    "ColumnLineage",
    "ColumnOrigin",
    "ColumnRuleSpec",
    "CopyFormat",
    "CopyMasker",
    "CustomDetectorSpec",
    "Detector",
    "DetectorSpec",
    "Finding",
    "MaskStats",
    "Masker",
    "MaskingConfigError",
    "MaskingEngine",
    "MaskingError",
    "MaskingProfileSpec",
    "MaskingSpec",
    "NerSpec",
    "OutputColumn",
    "Pattern",
    "Replacer",
    "ResultColumn",
    "RowMasker",
    "Scanner",
    "StatementLineage",
    "StaticCatalog",
    "Strategy",
    "TableRef",
    "analyze",
    "coerce_masked",
    "mask_whole_value",
    "result_lineage",
]
