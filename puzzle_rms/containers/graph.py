"""Graph: a directed acyclic graph of module nodes, built with ``module.node(*parents)``."""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

from puzzle_rms import backends
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
                stack.extend((parent, False) for parent, _ in reversed(node.parents))
    return order


def _add(old: Any, new: Any) -> Any:
    return new if old is None else old + new


class Graph(Module):
    r"""Evaluates module nodes in topological order; backward sums the gradients of a node's consumers.

    If node :math:`v` feeds the nodes :math:`c_1, \dots, c_k` then
    :math:`\partial L / \partial y_v = \sum_j \partial L / \partial y_v |_{c_j}` (fan-out); for a node whose
    output is a list, per element, with zeros for elements no consumer picked.

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
    topological order, so ``namedVariables()`` gives names like ``"0.W"`` or ``"encoder.W"``.
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

    def getNodeByName(self, name: str) -> Node:
        """The node whose module is keyed ``name``."""
        for key, node in zip(self.modules, self.order):
            if key == name:
                return node
        raise KeyError(f"{self!r}: no node named {name!r}; have {list(self.modules)}")

    def updateData(self, data: Any) -> Any:
        data = data if isinstance(data, list) else [data]
        if len(data) != len(self.inputs):
            raise ValueError(f"{self!r}: got {len(data)} input arrays for {len(self.inputs)} input nodes")
        values = {id(node): node.module(x) for node, x in zip(self.inputs, data)}
        for node in self.order:
            if not node.parents:
                continue
            if node.single:
                args = values[id(node.parents[0][0])]
            else:
                args = []
                for parent, slots in node.parents:
                    value = values[id(parent)]
                    args.extend([value] if slots is None else [value[slot] for slot in slots])
            values[id(node)] = node.module(args)
        outs = [values[id(node)] for node in self.outputs]
        return outs[0] if len(outs) == 1 else outs

    def backward(self, grad: Any, updParamGrads: bool = True, updGrad: bool = True, scale: float = 1.0,
                 momentum: float = 1.0) -> Any:
        """Backward through the nodes in reverse topological order; children accumulate (``momentum=1.0``).

        ``updGrad=False`` skips the input nodes' dL/dx. See :meth:`Module.backward` for the arguments.
        """
        grad = self._checkedGrad(grad, updParamGrads, updGrad)
        grads: dict[int, Any] = {}  # id(node) -> dL/d(output): an array, or a list (None: no gradient yet)

        def accumulate(node: Node, slots: Optional[list[int]], g: Any) -> None:
            out = node.module.data
            if not isinstance(out, list):
                grads[id(node)] = _add(grads.get(id(node)), g)
                return
            current = grads.setdefault(id(node), [None] * len(out))
            for slot, value in zip(range(len(out)) if slots is None else slots, g):
                current[slot] = _add(current[slot], value)

        for node, g in zip(self.outputs, grad if len(self.outputs) > 1 else [grad]):
            accumulate(node, None, g)
        xp = backends.current().xp
        inputs = {id(node) for node in self.inputs}
        for node in reversed(self.order):
            g = grads.get(id(node))
            out = node.module.data
            if isinstance(out, list):
                g = [xp.zeros_like(o) if gi is None else gi for o, gi in zip(out, g or [None] * len(out))]
            elif g is None:
                g = xp.zeros_like(out)
            gIn = node.module.backward(g, updParamGrads=updParamGrads, updGrad=updGrad or id(node) not in inputs,
                                       scale=scale, momentum=momentum)
            if not node.parents:
                continue
            if node.single:
                accumulate(node.parents[0][0], None, gIn)
                continue
            position = 0
            for parent, slots in node.parents:
                if slots is None:
                    accumulate(parent, None, gIn[position])
                    position += 1
                else:
                    accumulate(parent, slots, gIn[position:position + len(slots)])
                    position += len(slots)
        inGrads = [node.module.grad for node in self.inputs]
        self.grad = inGrads[0] if len(inGrads) == 1 else inGrads
        return self.grad
