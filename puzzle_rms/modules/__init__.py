"""Layers with hand-written backward passes: Module (the base), Linear, Activation, Add, Concat, Embedding."""
from puzzle_rms.modules.activation import Activation, leakyRelu, relu, sigmoid, tanh
from puzzle_rms.modules.embedding import Embedding
from puzzle_rms.modules.linear import Linear
from puzzle_rms.modules.merge import Add, Concat
from puzzle_rms.modules.module import Module, Node

__all__ = ["Activation", "Add", "Concat", "Embedding", "Linear", "Module", "Node", "leakyRelu", "relu", "sigmoid", "tanh"]
