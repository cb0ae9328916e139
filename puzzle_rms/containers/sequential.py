"""Sequential: a chain of modules."""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Union

from puzzle_rms.modules.module import Module


class Sequential(Module):
    r"""The composition :math:`y = f_n(\dots f_2(f_1(x)))`; backward runs the chain in reverse.

    A child is keyed by its ``name`` when it has one, else by its position (``"0"``, ``"1"``, ...),
    so ``getVarTable()`` gives names like ``"0.W"``, ``"0.b"``, ``"2.W"``.
    """

    def append(self, module: Module) -> None:
        """Add ``module`` at the end of the chain."""
        if not isinstance(module, Module):
            raise TypeError(f"{self!r}.append: expected a Module, got {type(module).__name__}")
        if any(module is child for child in self.modules.values()):
            raise ValueError(f"{self!r}.append: {module!r} is already in the chain (a module keeps one forward state)")
        key = module.name if module.name is not None else str(len(self.modules))
        if key in self.modules:
            raise ValueError(f"{self!r}.append: a module named {key!r} is already in the chain")
        self.modules[key] = module

    def extend(self, modules: Iterable[Module]) -> None:
        """Append each of ``modules`` in order."""
        for module in modules:
            self.append(module)

    def __getitem__(self, index: Union[int, str]) -> Module:
        """The child at position ``index``, or with key ``index`` when it is a string."""
        return self.modules[index] if isinstance(index, str) else list(self.modules.values())[index]

    def __len__(self) -> int:
        return len(self.modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self.modules.values()))

    def updateData(self, data: Any) -> Any:
        for module in self.modules.values():
            data = module(data)
        return data

    def propagate(self, grad: Any, updGrad: bool) -> Any:
        """Backward through the chain in reverse; the first module gets ``updGrad`` (its input is this one's)."""
        chain = list(self.modules.values())
        if not chain:
            return grad if updGrad else None
        for module in reversed(chain[1:]):
            grad = module.backward(grad)
        return chain[0].backward(grad, updGrad)
