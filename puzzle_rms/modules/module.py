"""Module: the base of every layer and container, and Node, a module's place in a Graph.

A module maps an input array to an output array (``__call__``) and maps the
gradient of a scalar loss L with respect to its output, dL/dy, back to dL/dx
(``backward``), writing dL/dw into each parameter's ``Variable.grad`` (a bare module
overwrites, a container accumulates, as in PuzzleLib).
Subclasses write three hooks, as in PuzzleLib: ``updateData`` (forward),
``updateGrad`` (dL/dx) and ``accGradParams`` (dL/dw, written as ``momentum * grad + scale * dL/dw``).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from puzzle_rms import backends, puzzlelib_hdf
from puzzle_rms.backends.gpuarray import withGet
from puzzle_rms.checkpoint import loadModule, saveModule
from puzzle_rms.validation import check_bool, check_optional_str
from puzzle_rms.variable import Variable


def _withGet(x: Any) -> Any:
    """An output or gradient (or a list of them) with PuzzleLib's ``get()``/``set()`` on the CPU backends."""
    return [_withGet(item) for item in x] if isinstance(x, list) else withGet(x)


def _shapes(x: Any) -> Any:
    """The shape of an array, or the list of shapes of a list of arrays."""
    return [_shapes(item) for item in x] if isinstance(x, (list, tuple)) else tuple(x.shape)


def writeGrad(out: Any, value: Any, scale: float, momentum: float) -> None:
    """``out = momentum * out + scale * value`` in place (PuzzleLib's beta/alpha of a parameter gradient)."""
    if momentum == 0:
        out[...] = value if scale == 1 else scale * value
        return
    if momentum != 1:
        out *= momentum
    out += value if scale == 1 else scale * value


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
        self.inData = self._toCalc(data, "input")
        self.data = _withGet(self.updateData(self.inData))
        return self.data

    def backward(self, grad: Any, updParamGrads: bool = True, updGrad: bool = True, scale: float = 1.0,
                 momentum: float = 0.0) -> Any:
        """Given dL/dy of the last output, compute dL/dx and the parameters' dL/dw (PuzzleLib's signature).

        Parameters
        ----------
        grad : array or list of arrays
            dL/dy, in the layout of the last output.
        updParamGrads : bool
            Whether to write the parameters' gradients (never in eval mode).
        updGrad : bool
            Whether to compute dL/dx (``self.grad`` is None otherwise).
        scale, momentum : float
            Each parameter gradient becomes ``momentum * grad + scale * dL/dw``. A bare module's default
            ``momentum=0.0`` overwrites; containers pass ``momentum=1.0`` so their children accumulate.

        Returns
        -------
        dL/dx (also kept in ``self.grad``), or None when ``updGrad`` is False.
        """
        grad = self._checkedGrad(grad, updParamGrads, updGrad)
        self.grad = _withGet(self.updateGrad(grad)) if updGrad else None
        if updParamGrads and self.train:
            self.accGradParams(grad, scale=scale, momentum=momentum)
        return self.grad

    def _checkedGrad(self, grad: Any, updParamGrads: bool, updGrad: bool) -> Any:
        """``grad`` on the backend in ``calctype``, once its shape matches the last output's and the flags are bools."""
        if self.data is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        for name, flag in (("updParamGrads", updParamGrads), ("updGrad", updGrad)):
            if flag is not True and flag is not False:
                check_bool(f"{self!r}.backward", name, flag)
        grad = self._toCalc(grad, "grad")
        if _shapes(grad) != _shapes(self.data):
            raise ValueError(f"{self!r}: grad of shape {_shapes(grad)} does not match the output's shape "
                             f"{_shapes(self.data)}")
        return grad

    def updateData(self, data: Any) -> Any:
        """Forward: return y = f(data)."""
        raise NotImplementedError

    def updateGrad(self, grad: Any) -> Any:
        """Return dL/dx = (dy/dx)^T dL/dy for the last input x."""
        raise NotImplementedError

    def accGradParams(self, grad: Any, scale: float = 1.0, momentum: float = 0.0) -> None:
        """Set each parameter's ``grad`` to ``momentum * grad + scale * dL/dw`` (nothing without parameters)."""

    def _toCalc(self, x: Any, what: str, top: Any = None) -> Any:
        """``x`` (an array or a list of arrays) on the current backend, floating arrays cast to ``calctype``.

        TypeError naming ``what`` (input or grad) for anything else, e.g. a nested Python list of numbers.
        """
        top = x if top is None else top
        if isinstance(x, (list, tuple)):
            return [self._toCalc(item, what, top) for item in x]
        if not (hasattr(x, "shape") and hasattr(x, "dtype")):
            got = (f"a Python {type(top).__name__} holding {type(x).__name__} values" if top is not x
                   else f"a {type(x).__name__}")
            raise TypeError(f"{self!r}: {what} must be an array (a list only of arrays, one per input of a multi-input "
                            f"module), got {got}; convert it with np.asarray(value, dtype=np.float32)")
        backend = backends.current()
        if not backend.owns(x):
            x = backend.to_device(x)
        dtype = x.dtype
        return x if dtype == self.calctype or dtype.kind != "f" else x.astype(self.calctype)

    # --- parameters -----------------------------------------------------------------------------
    def namedVariables(self) -> dict[str, Variable]:
        """All parameters, keyed by dotted path: ``"W"`` here, ``"0.W"`` for child ``"0"``, and so on.

        What optimizers, checkpoints and the HDF5 files key by; a Variable shared by two modules appears
        under each of its paths.
        """
        table = dict(self.vars)
        for childName, child in self.modules.items():
            table.update({f"{childName}.{name}": var for name, var in child.namedVariables().items()})
        return table

    def getVarTable(self) -> dict[Variable, list[str]]:
        """PuzzleLib's table: each distinct Variable mapped to the list of its dotted paths (see :meth:`namedVariables`)."""
        table: dict[Variable, list[str]] = {}
        for name, var in self.namedVariables().items():
            table.setdefault(var, []).append(name)
        return table

    def zeroGradParams(self) -> None:
        """Set every parameter's gradient to zero, here and in every child."""
        for var in self.vars.values():
            if var.grad is not None:
                var.grad.fill(0)
        for child in self.modules.values():
            child.zeroGradParams()

    def updateParams(self, learnRate: float) -> None:
        """A plain gradient step on every parameter: ``w -= learnRate * grad`` (PuzzleLib adds, as its
        gradients carry the negative sign; here gradients are dL/dw)."""
        for var in self.getVarTable():
            if var.grad is not None:
                var.data -= var.dtype.type(learnRate) * var.grad

    def numOfParams(self) -> int:
        """The number of scalar parameters (each shared Variable counted once)."""
        return sum(var.size for var in self.getVarTable())

    def paramSize(self, unit: Optional[str] = None) -> float:
        """The parameters' size in bytes, or in ``unit`` "kb" or "mb" (1024 and 1024**2 bytes)."""
        size = sum(var.size * var.dtype.itemsize for var in self.getVarTable())
        if unit is None:
            return size
        divider = {"kb": 1024, "mb": 1024 ** 2}.get(unit)
        if divider is None:
            raise ValueError(f"{self!r}: paramSize unit must be None, 'kb' or 'mb', got {unit!r}")
        return size / divider

    def getByName(self, name: str) -> Optional[Module]:
        """The child module keyed ``name`` here or, searched depth-first, in any descendant; None if none."""
        if name in self.modules:
            return self.modules[name]
        for child in self.modules.values():
            found = child.getByName(name)
            if found is not None:
                return found
        return None

    def _owner(self, name: str) -> tuple[Module, str]:
        """The module that holds the variable with dotted path ``name``, and its local name there."""
        head, dot, rest = name.partition(".")
        return self.modules[head]._owner(rest) if dot and head in self.modules else (self, name)

    def getVar(self, name: str) -> Variable:
        """The Variable at dotted path ``name`` (a key of ``namedVariables()``)."""
        owner, local = self._owner(name)
        if local not in owner.vars:
            raise KeyError(f"{self!r}: no variable {name!r}; have {sorted(self.namedVariables())}")
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
        holds the Variables it was given. The replaced Variables are retired, so an optimizer set up
        before raises at its next update (call ``setupOn`` again) instead of updating Variables the
        module no longer uses.
        """
        supported = backends.current().dtypesSupported
        if np.dtype(dtype) not in supported:
            raise ValueError(f"{self!r}: calcMode dtype must be one of {[str(d) for d in supported]}, got {dtype!r}")
        self.calctype = np.dtype(dtype)
        for name, var in self.vars.items():
            if var.dtype != self.calctype:
                self.vars[name] = Variable(var.data.astype(self.calctype), name=var.name,
                                           grad=None if var.grad is None else var.grad.astype(self.calctype),
                                           learnRate=var.learnRate)
                var.retire(f"calcMode({self.calctype}) of {self!r}")
        for child in self.modules.values():
            child.calcMode(dtype)

    # --- checkpoints ----------------------------------------------------------------------------
    def save(self, path: str) -> None:
        """Write every parameter (``namedVariables()``) to ``path``, an .npz file, atomically.

        See :mod:`puzzle_rms.checkpoint`; ``saveTraining`` saves the module with its optimizer.
        A path ending in .hdf/.h5/.hdf5 gets PuzzleLib's HDF5 layout (:mod:`puzzle_rms.puzzlelib_hdf`).
        """
        (puzzlelib_hdf.saveModule if puzzlelib_hdf.isHdfPath(path) else saveModule)(path, self)

    def load(self, path: str) -> None:
        """Load parameters written by :meth:`save` in place; names, shapes and dtypes must all match
        (every mismatch is listed in the error, and nothing is modified). An optimizer with float32 master
        weights keeps its own copy: load it too (``puzzle_rms.checkpoint.loadTraining``). A path ending in
        .hdf/.h5/.hdf5 is read as a PuzzleLib model file (:mod:`puzzle_rms.puzzlelib_hdf`)."""
        (puzzlelib_hdf.loadModule if puzzlelib_hdf.isHdfPath(path) else loadModule)(path, self)

    # --- graphs ---------------------------------------------------------------------------------
    def node(self, *parents: Any) -> Node:
        """This module as a graph node fed by ``parents`` (none for an input node).

        A parent is a Node (its whole output) or a pair ``(node, slot)`` / ``(node, [slots])`` picking
        elements of a node whose output is a list (PuzzleLib's form). One whole parent passes its output as
        this module's input; otherwise the input is the list of the picked outputs, in order.
        """
        return Node(self, parents)


class Node:
    """A module's place in a :class:`~puzzle_rms.containers.Graph`: the module and what feeds it.

    ``parents`` holds ``(node, slots)`` pairs: ``slots`` None for a parent's whole output, else the list of
    indices picked from its list output.
    """

    def __init__(self, module: Module, parents: tuple = ()) -> None:
        self.module = module
        self.parents: list[tuple[Node, Optional[list[int]]]] = []
        for parent in parents:
            node, slots = (parent, None) if isinstance(parent, Node) else _parentPair(module, parent)
            self.parents.append((node, slots))

    @property
    def single(self) -> bool:
        """Whether the module's input is one parent's whole output (not a list of picked outputs)."""
        return len(self.parents) == 1 and self.parents[0][1] is None

    def __repr__(self) -> str:
        return f"Node({self.module!r})"


def _parentPair(module: Module, parent: Any) -> tuple[Node, list[int]]:
    if not (isinstance(parent, tuple) and len(parent) == 2 and isinstance(parent[0], Node)):
        raise TypeError(f"{module!r}.node: parents must be Nodes or (Node, slot) pairs, got {parent!r}")
    node, slots = parent
    slots = slots if isinstance(slots, list) else [slots]
    if not slots or not all(isinstance(slot, int) and not isinstance(slot, bool) and slot >= 0 for slot in slots):
        raise TypeError(f"{module!r}.node: slots must be an int >= 0 or a non-empty list of them, got {parent[1]!r}")
    return node, slots
