"""Graph: a directed acyclic graph of module nodes, built with ``module.node(*parents)``."""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

from puzzle_rms.modules.module import Module, Node

Nodes = Union[Node, Sequence[Node]]


def _asList(owner: str, what: str, nodes: Nodes) -> list[Node]:
    nodes = [nodes] if isinstance(nodes, Node) else list(nodes)
    if not nodes or not all(isinstance(node, Node) for node in nodes):
        raise TypeError(f"{owner}: {what} must be a Node or a non-empty list of Nodes, got {nodes!r}")
    return nodes


def _topological(outputs: list[Node]) -> list[Node]:
    """Every node the outputs depend on, each after its parents (depth-first, parents in order)."""
    order: list[Node] = []
    seen: set[int] = set()
    for output in outputs:
        stack = [(output, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
            elif id(node) not in seen:
                seen.add(id(node))
                stack.append((node, True))
                stack.extend((parent, False) for parent in reversed(node.parents))
    return order


class Graph(Module):
    r"""Evaluates module nodes in topological order; backward sums the gradients of a node's consumers.

    If node :math:`v` feeds the nodes :math:`c_1, \dots, c_k` then
    :math:`\partial L / \partial y_v = \sum_j \partial L / \partial y_v |_{c_j}` (fan-out).

    Parameters
    ----------
    inputs : Node or list of Node
        The nodes without parents; ``graph(x)`` takes one array per input node (a list when several).
    outputs : Node or list of Node
        The nodes whose outputs ``graph(x)`` returns (a list when several); ``backward`` takes one
        gradient per output node in the same layout.
    name : str, optional
        Key in a container.

    Notes
    -----
    A node's module is keyed by its ``name`` when it has one, else by its position in the
    topological order, so ``getVarTable()`` gives names like ``"0.W"`` or ``"encoder.W"``.
    """

    def __init__(self, inputs: Nodes, outputs: Nodes, name: Optional[str] = None) -> None:
        super().__init__(name)
        self.inputs = _asList("Graph", "inputs", inputs)
        self.outputs = _asList("Graph", "outputs", outputs)
        self.order = _topological(self.outputs)
        for node in self.inputs:
            if node.parents:
                raise ValueError(f"Graph: input {node!r} has parents; input nodes must have none")
        if len({id(node) for node in self.inputs}) != len(self.inputs):
            raise ValueError("Graph: inputs lists a node twice")
        sources = {id(node) for node in self.order if not node.parents}
        if sources != {id(node) for node in self.inputs}:
            raise ValueError("Graph: the nodes without parents that the outputs depend on must be exactly the inputs, "
                             f"got inputs {self.inputs} and sources {[n for n in self.order if not n.parents]}")
        for index, node in enumerate(self.order):
            key = node.module.name if node.module.name is not None else str(index)
            if key in self.modules:
                raise ValueError(f"Graph: two nodes have the key {key!r} (a module may appear in one node only, "
                                 "and module names must be unique)")
            self.modules[key] = node.module
        if len({id(module) for module in self.modules.values()}) != len(self.modules):
            raise ValueError("Graph: a module appears in two nodes (a module keeps one forward state)")

    def updateData(self, data: Any) -> Any:
        data = data if isinstance(data, list) else [data]
        if len(data) != len(self.inputs):
            raise ValueError(f"{self!r}: got {len(data)} input arrays for {len(self.inputs)} input nodes")
        values = {id(node): node.module(x) for node, x in zip(self.inputs, data)}
        for node in self.order:
            if node.parents:
                args = [values[id(parent)] for parent in node.parents]
                values[id(node)] = node.module(args[0] if len(args) == 1 else args)
        outs = [values[id(node)] for node in self.outputs]
        return outs[0] if len(outs) == 1 else outs

    def propagate(self, grad: Any, updGrad: bool) -> Any:
        """Backward in reverse topological order; the input nodes' modules get ``updGrad`` (they read the data)."""
        grads: dict[int, Any] = {}

        def accumulate(node: Node, g: Any) -> None:
            grads[id(node)] = g if id(node) not in grads else grads[id(node)] + g

        for node, g in zip(self.outputs, grad if len(self.outputs) > 1 else [grad]):
            accumulate(node, g)
        for node in reversed(self.order):
            if not node.parents:  # an input node: its input is the data
                node.module.backward(grads[id(node)], updGrad)
                continue
            g = node.module.backward(grads[id(node)])
            for parent, gp in zip(node.parents, [g] if len(node.parents) == 1 else g):
                accumulate(parent, gp)
        if not updGrad:
            return None
        inGrads = [node.module.grad for node in self.inputs]
        return inGrads[0] if len(inGrads) == 1 else inGrads
