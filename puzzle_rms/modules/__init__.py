"""Layers with hand-written backward passes, PuzzleLib's names: Module, Linear, Activation and the data movers."""
from puzzle_rms.modules.activation import Activation, ActivationType, clip, elu, leakyRelu, relu, sigmoid, softPlus, tanh
from puzzle_rms.modules.cast import Cast
from puzzle_rms.modules.dropout import Dropout
from puzzle_rms.modules.embedding import Embedding
from puzzle_rms.modules.identity import Identity
from puzzle_rms.modules.linear import Linear
from puzzle_rms.modules.merge import Add, Concat
from puzzle_rms.modules.module import Module, Node
from puzzle_rms.modules.replicate import Replicate
from puzzle_rms.modules.reshape import Flatten, Reshape
from puzzle_rms.modules.softmax import SoftMax
from puzzle_rms.modules.split import Split

__all__ = ["Activation", "ActivationType", "Add", "Cast", "Concat", "Dropout", "Embedding", "Flatten", "Identity", "Linear", "Module",
           "Node", "Replicate", "Reshape", "SoftMax", "Split", "clip", "elu", "leakyRelu", "relu", "sigmoid",
           "softPlus", "tanh"]
