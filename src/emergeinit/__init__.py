"""emergeinit: the emergence-promoting initialization of Li, George & Silva (arXiv 2407.19044).

Public API only; the logic lives in one module per concept.
"""

from importlib.metadata import PackageNotFoundError, version

from . import errors
from .init import emergence_init_, emergence_param_groups
from .measure import (
    EmergenceResult,
    EmergenceTracker,
    EmergenceValue,
    graph_emergence,
    measure_emergence,
)
from .report import InitReport, SkippedRecord, UnitRecord
from .schedule import exponents
from .units import DepthUnit, DepthUnitList, depth_units

try:
    __version__ = version("emergeinit")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "DepthUnit",
    "DepthUnitList",
    "EmergenceResult",
    "EmergenceTracker",
    "EmergenceValue",
    "InitReport",
    "SkippedRecord",
    "UnitRecord",
    "__version__",
    "depth_units",
    "emergence_init_",
    "emergence_param_groups",
    "errors",
    "exponents",
    "graph_emergence",
    "measure_emergence",
]
