"""Containers: Sequential (a chain), Parallel (side by side) and Graph (a DAG of module nodes)."""
from puzzle_rms.containers.graph import Graph
from puzzle_rms.containers.parallel import Parallel
from puzzle_rms.containers.sequential import Sequential
from puzzle_rms.modules.module import Node

__all__ = ["Graph", "Node", "Parallel", "Sequential"]
