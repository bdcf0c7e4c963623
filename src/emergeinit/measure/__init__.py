"""The emergence measure (docs/measure.md): Li's E(G, H) on graphs, and on networks' activations."""

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
