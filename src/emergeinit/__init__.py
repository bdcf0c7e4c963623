"""emergeinit: the emergence-promoting initialization of Li, George & Silva (arXiv 2407.19044).

Public API only; the logic lives in one module per concept.
"""

from importlib.metadata import PackageNotFoundError, version

from . import errors
from .schedule import exponents

try:
    __version__ = version("emergeinit")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "__version__",
    "errors",
    "exponents",
]
