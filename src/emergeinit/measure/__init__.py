"""The emergence measure (SPEC 2): Li's E(G, H) on graphs and its network form on activations."""

from .graph import EmergenceValue, graph_emergence
from .network import EmergenceResult, measure_emergence
from .tracker import EmergenceTracker

__all__ = [
    "EmergenceResult",
    "EmergenceTracker",
    "EmergenceValue",
    "graph_emergence",
    "measure_emergence",
]
