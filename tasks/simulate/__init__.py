"""Live-streaming platform simulator: raw event tables plus oracle ground truth."""

from tasks.simulate.config import SimConfig
from tasks.simulate.engine import simulate_platform
from tasks.simulate.sink import Sink

__all__ = ["SimConfig", "Sink", "simulate_platform"]
