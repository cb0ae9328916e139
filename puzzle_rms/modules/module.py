"""Module: the base of every layer and container, and Node, a module's place in a Graph.

A module maps an input array to an output array (``__call__``) and maps the
gradient of a scalar loss L with respect to its output, dL/dy, back to dL/dx
(``backward``), accumulating dL/dw into each parameter's ``Variable.grad``.
Subclasses write three hooks, as in PuzzleLib: ``updateData`` (forward),
``updateGrad`` (dL/dx) and ``accGradParams`` (dL/dw, added in place).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from puzzle_rms import backends
from puzzle_rms.checkpoint import loadModule, saveModule
from puzzle_rms.validation import check_bool, check_optional_str
from puzzle_rms.variable import Variable


def _shapes(x: Any) -> Any:
    """The shape of an array, or the list of shapes of a list of arrays."""
    return [_shapes(item) for item in x] if isinstance(x, (list, tuple)) else tuple(x.shape)


class Module:
    """Base class: parameters in ``vars``, child modules in ``modules``, a train/eval flag and a compute dtype.

    Parameters
    ----------
    name : str, optional
        The key of this module in a container; containers use a position-based key otherwise.

    Attributes
    ----------
    vars : dict of str to Variable
        This module's own parameters (children's are reached through ``modules``).
    modules : dict of str to Module
        Child modules (containers only).
    train : bool
        True in train mode (the default), False in eval mode.
    calctype : numpy.dtype
        The float dtype of parameters and computations (float32 unless ``calcMode`` changed it).
    inData, data, grad : array or None
        The last input, the last output and the last gradient with respect to the input.
    """

    def __init__(self, name: Optional[str] = None) -> None:
        self.name = check_optional_str(type(self).__name__, "name", name)
        self.vars: dict[str, Variable] = {}
        self.modules: dict[str, Module] = {}
        self.train = True
        self.calctype = np.dtype(np.float32)
        self.inData: Any = None
        self.data: Any = None
        self.grad: Any = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    # --- forward and backward -------------------------------------------------------------------
    def __call__(self, data: Any) -> Any:
        """Run forward on ``data`` (an array, or a list of arrays for multi-input modules) and return the output.

        Arrays are moved to the current backend and floating ones cast to ``calctype``.
        """
        self.inData = self._toCalc(data)
        self.data = self.updateData(self.inData)
        return self.data

    def backward(self, grad: Any, updGrad: bool = True) -> Any:
        """Given dL/dy of the last output, add dL/dw to every parameter's ``grad`` in place and return dL/dx.

        With ``updGrad=False`` (PuzzleLib's name) dL/dx is not computed: ``grad`` and the return value are
        None. Pass it when the input is data that needs no gradient, as a training loop's data does; a
        container passes it on to the modules its input feeds, so the first layer skips the product
        ``dL/dy W^T`` (its parameters' gradients are computed either way).
        """
        if self.data is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        if updGrad is not True and updGrad is not False:
            check_bool(f"{self!r}.backward", "updGrad", updGrad)
        grad = self._toCalc(grad)
        if (grad.shape != self.data.shape if hasattr(grad, "shape") and hasattr(self.data, "shape")
                else _shapes(grad) != _shapes(self.data)):
            raise ValueError(f"{self!r}: grad of shape {_shapes(grad)} does not match the output's shape "
                             f"{_shapes(self.data)}")
        self.grad = self.propagate(grad, updGrad)
        return self.grad

    def propagate(self, grad: Any, updGrad: bool) -> Any:
        """The backward pass on a checked ``grad``: dL/dw into the parameters, and dL/dx (None unless ``updGrad``).

        Containers override it to run their children; layers write :meth:`updateGrad` and
        :meth:`accGradParams` instead.
        """
        inGrad = self.updateGrad(grad) if updGrad else None
        self.accGradParams(grad)
        return inGrad

    def updateData(self, data: Any) -> Any:
        """Forward: return y = f(data)."""
        raise NotImplementedError

    def updateGrad(self, grad: Any) -> Any:
        """Return dL/dx = (dy/dx)^T dL/dy for the last input x."""
        raise NotImplementedError

    def accGradParams(self, grad: Any) -> None:
        """Add dL/dw to each parameter's ``grad`` in place (nothing for modules without parameters)."""

    def _toCalc(self, x: Any) -> Any:
        if isinstance(x, (list, tuple)):
            return [self._toCalc(item) for item in x]
        backend = backends.current()
        if not backend.owns(x):
            x = backend.to_device(x)
        dtype = x.dtype
        return x if dtype == self.calctype or dtype.kind != "f" else x.astype(self.calctype)

    # --- parameters -----------------------------------------------------------------------------
    def getVarTable(self) -> dict[str, Variable]:
        """All parameters, keyed by dotted path: ``"W"`` here, ``"0.W"`` for child ``"0"``, and so on."""
        table = dict(self.vars)
        for childName, child in self.modules.items():
            table.update({f"{childName}.{name}": var for name, var in child.getVarTable().items()})
        return table

    def _owner(self, name: str) -> tuple[Module, str]:
        """The module that holds the variable with dotted path ``name``, and its local name there."""
        head, dot, rest = name.partition(".")
        return self.modules[head]._owner(rest) if dot and head in self.modules else (self, name)

    def getVar(self, name: str) -> Variable:
        """The Variable at dotted path ``name`` (a key of ``getVarTable()``)."""
        owner, local = self._owner(name)
        if local not in owner.vars:
            raise KeyError(f"{self!r}: no variable {name!r}; have {sorted(self.getVarTable())}")
        return owner.vars[local]

    def setVar(self, name: str, var: Variable) -> None:
        """Set the Variable at dotted path ``name``; its ``name`` defaults to the local name."""
        if not isinstance(var, Variable):
            raise TypeError(f"{self!r}: setVar({name!r}) needs a Variable, got {type(var).__name__}")
        owner, local = self._owner(name)
        old = owner.vars.get(local)
        if old is not None and old.shape != var.shape:
            raise ValueError(f"{self!r}: variable {name!r} has shape {old.shape}, got a Variable of shape {var.shape}")
        if var.name is None:
            var.name = local
        owner.vars[local] = var

    # --- modes ----------------------------------------------------------------------------------
    def trainMode(self) -> None:
        """Set ``train = True`` here and in every child."""
        self._setTrain(True)

    def evalMode(self) -> None:
        """Set ``train = False`` here and in every child."""
        self._setTrain(False)

    def _setTrain(self, train: bool) -> None:
        self.train = train
        for child in self.modules.values():
            child._setTrain(train)

    def calcMode(self, dtype: Any) -> None:
        """Compute in float ``dtype`` (float16, float32 or float64) from now on, here and in every child.

        Parameters are replaced by new Variables of that dtype (values, gradients, names and
        ``learnRate`` kept). Call it before an optimizer is set up on this module: the optimizer
        holds the Variables it was given.
        """
        supported = backends.current().dtypesSupported
        if np.dtype(dtype) not in supported:
            raise ValueError(f"{self!r}: calcMode dtype must be one of {[str(d) for d in supported]}, got {dtype!r}")
        self.calctype = np.dtype(dtype)
        for name, var in self.vars.items():
            if var.dtype != self.calctype:
                self.vars[name] = Variable(var.data.astype(self.calctype), grad=var.grad.astype(self.calctype),
                                           name=var.name, learnRate=var.learnRate)
        for child in self.modules.values():
            child.calcMode(dtype)

    # --- checkpoints ----------------------------------------------------------------------------
    def save(self, path: str) -> None:
        """Write every parameter (``getVarTable()``) to ``path``, an .npz file, atomically.

        See :mod:`puzzle_rms.checkpoint`; ``saveTraining`` saves the module with its optimizer.
        """
        saveModule(path, self)

    def load(self, path: str) -> None:
        """Load parameters written by :meth:`save` in place; names, shapes and dtypes must all match
        (every mismatch is listed in the error, and nothing is modified). An optimizer with float32 master
        weights keeps its own copy: load it too (``puzzle_rms.checkpoint.loadTraining``)."""
        loadModule(path, self)

    # --- graphs ---------------------------------------------------------------------------------
    def node(self, *parents: Node) -> Node:
        """This module as a graph node fed by ``parents`` (none for an input node).

        One parent passes its output as this module's input; several pass the list of their outputs.
        """
        return Node(self, parents)


class Node:
    """A module's place in a :class:`~puzzle_rms.containers.Graph`: the module and the nodes feeding it."""

    def __init__(self, module: Module, parents: tuple = ()) -> None:
        for parent in parents:
            if not isinstance(parent, Node):
                raise TypeError(f"{module!r}.node: parents must be Nodes, got {type(parent).__name__}")
        self.module = module
        self.parents = tuple(parents)

    def __repr__(self) -> str:
        return f"Node({self.module!r})"
