"""Sequential: a chain of modules."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Union

from puzzle_rms.modules.module import Module


class Sequential(Module):
    r"""The composition :math:`y = f_n(\dots f_2(f_1(x)))`; backward runs the chain in reverse.

    A child is keyed by its ``name`` when it has one, else by the number of children when it was added
    (``"0"``, ``"1"``, ...), so ``namedVariables()`` gives names like ``"0.W"``, ``"0.b"``, ``"2.W"``.
    """

    def _key(self, module: Module, where: str) -> str:
        if not isinstance(module, Module):
            raise TypeError(f"{self!r}.{where}: expected a Module, got {type(module).__name__}")
        if any(module is child for child in self.modules.values()):
            raise ValueError(f"{self!r}.{where}: {module!r} is already in the chain (a module keeps one forward state)")
        key = module.name if module.name is not None else str(len(self.modules))
        if key in self.modules:
            raise ValueError(f"{self!r}.{where}: a module named {key!r} is already in the chain")
        return key

    def append(self, module: Module) -> Sequential:
        """Add ``module`` at the end of the chain; returns this Sequential (so appends chain)."""
        self.modules[self._key(module, "append")] = module
        return self

    def extend(self, modules: Iterable[Module]) -> Sequential:
        """Append each of ``modules`` (a list or another Sequential) in order; returns this Sequential."""
        for module in modules:
            self.append(module)
        return self

    def insert(self, module: Module, index: int) -> None:
        """Put ``module`` at position ``index`` of the chain (PuzzleLib's argument order)."""
        key = self._key(module, "insert")
        items = list(self.modules.items())
        items.insert(index, (key, module))
        self.modules = dict(items)

    def insertAfter(self, module: Module, name: str) -> None:
        """Put ``module`` right after the child keyed ``name``."""
        keys = list(self.modules)
        if name not in keys:
            raise KeyError(f"{self!r}.insertAfter: no module named {name!r}; have {keys}")
        self.insert(module, keys.index(name) + 1)

    def pop(self) -> Module:
        """Remove the last module of the chain and return it."""
        if not self.modules:
            raise IndexError(f"{self!r}.pop: the chain is empty")
        return self.modules.pop(list(self.modules)[-1])

    def __getitem__(self, index: Union[int, str, slice]) -> Union[Module, Sequential]:
        """The child at position ``index``, with key ``index`` when it is a string, or a new Sequential of the
        children in a slice (the same module objects)."""
        if isinstance(index, str):
            return self.modules[index]
        if isinstance(index, slice):
            return Sequential().extend(list(self.modules.values())[index])
        return list(self.modules.values())[index]

    def __len__(self) -> int:
        return len(self.modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self.modules.values()))

    def updateData(self, data: Any) -> Any:
        for position, (key, module) in enumerate(self.modules.items()):
            with self._where(position, key):
                data = module(data)
        return data

    def backward(self, grad: Any, updParamGrads: bool = True, updGrad: bool = True, scale: float = 1.0,
                 momentum: float = 1.0) -> Any:
        """Backward through the chain in reverse; children accumulate into their gradients (``momentum=1.0``).

        ``updGrad=False`` skips only the first module's dL/dx (the gradient of the chain's input).
        See :meth:`Module.backward` for the arguments.
        """
        grad = self._checkedGrad(grad, updParamGrads, updGrad)
        children = list(self.modules.values())
        for index in range(len(children) - 1, -1, -1):
            grad = children[index].backward(grad, updParamGrads=updParamGrads, updGrad=updGrad or index > 0,
                                            scale=scale, momentum=momentum)
        self.grad = grad
        return grad

    @contextmanager
    def _where(self, position: int, key: str) -> Iterator[None]:
        """Re-raise a child's TypeError/ValueError prefixed with where it sits in this chain (subclasses pass as is)."""
        try:
            yield
        except (TypeError, ValueError) as error:
            if type(error) not in (TypeError, ValueError):
                raise
            raise type(error)(f"{self!r}: module {position + 1} of {len(self.modules)} (index {position}, "
                              f"key {key!r}): {error}") from error
