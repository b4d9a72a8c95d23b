"""Phanos's context tree: which profiled call runs inside which, as a context string."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Final

import jobtrace.compat.phanos as _api  # what a test may replace there is looked up there
from jobtrace.compat.phanos._base import InstanceLoggerMixin, _log


class Context:
    """The context string of one profiled call: ``Owner:root.child.grandchild``."""

    def __init__(self, method: Callable[..., Any] | None = None) -> None:
        self.method = method
        self.value: str = getattr(method, "__name__", "") if method else ""

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"'{self.value}'"

    def prepend_method_class(self) -> None:
        """Prefix the owner of a root call: the class that defines it, else its module."""
        method = self.method
        if inspect.isfunction(method):  # the usual root: the decorated function itself
            owner = _owners.get(method)
            if owner is None:
                owner = _owners[method] = _owner_of(method)
        else:
            owner = _owner_of(method)
        self.value = f"{owner}:{self.value}"


#: Series cells a metric keeps at hand.
_CELLS_CACHED: Final = 1024

#: Owners of root functions, found once each (inspect's lookups cost microseconds).
_owners: dict[Callable[..., Any], str] = {}


def _owner_of(meth: Any) -> str:
    if inspect.ismethod(meth):
        for cls in inspect.getmro(meth.__self__.__class__):
            if meth.__name__ in cls.__dict__:
                return cls.__name__
        meth = getattr(meth, "__func__", meth)
    if inspect.isfunction(meth):
        # The class is looked up by the qualified name in the defining module (the class
        # body has run by the time the method is first called).
        prefix = meth.__qualname__.split(".<locals>", 1)[0].rsplit(".", 1)[0]
        owner = getattr(inspect.getmodule(meth), prefix, None)
        if isinstance(owner, type):
            return owner.__name__
    objclass = getattr(meth, "__objclass__", None)  # slot wrappers and other descriptors
    if objclass is not None:
        return str(objclass.__name__)
    module = inspect.getmodule(meth)
    return module.__name__.rsplit(".", 1)[-1] if module else ""


class MethodTreeNode(InstanceLoggerMixin):
    """One profiled call in progress; ``ctx.value`` (``context``) is its context string."""

    def __init__(self, method: Callable[..., Any] | None = None, logger: Any = None) -> None:
        super().__init__(logged_name="phanos", logger=logger)
        self.children: list[MethodTreeNode] = []
        self.parent: MethodTreeNode | None = None
        self.ctx = _api.Context(method)

    @property
    def context(self) -> str:
        """The context string (Phanos 0.0.x's name)."""
        return self.ctx.value

    def add_child(self, child: MethodTreeNode) -> MethodTreeNode:
        child.parent = self
        if self.ctx.method is None:
            child.ctx.prepend_method_class()
        else:
            child.ctx.value = f"{self.ctx.value}.{child.ctx.value}"
        self.children.append(child)
        return child


class ContextTree(InstanceLoggerMixin):
    """The root of the profiled calls; nodes are detached again when their call ends."""

    def __init__(self, logger: Any = None) -> None:
        super().__init__(logged_name="phanos", logger=logger or _log)
        self.root = MethodTreeNode(logger=self.logger)

    def delete_node(self, node: MethodTreeNode) -> bool:
        """Detach ``node``; its children move up to its parent."""
        if node is self.root:
            return False
        parent = node.parent
        if parent is not None:
            with contextlib.suppress(ValueError):  # detached already by a clear()
                parent.children.remove(node)
            parent.children.extend(node.children)
        for child in node.children:
            child.parent = parent
        node.children = []
        node.parent = None
        return True

    def find_and_delete_node(
        self, node: MethodTreeNode, root: MethodTreeNode | None = None
    ) -> bool:
        if node is (root or self.root) or node.parent is not None:
            return self.delete_node(node)
        return False

    def clear(self, root: MethodTreeNode | None = None) -> None:
        """Detach every node below ``root`` (the tree's root is kept)."""
        start = root or self.root
        for child in list(start.children):
            self.clear(child)
        if start is not self.root:
            self.delete_node(start)


#: The node of the profiled call running here, whichever profiler made it: the method a
#: metric operation called without a node is recorded against.
_active_node: ContextVar[MethodTreeNode | None] = ContextVar("phanos_active_node", default=None)
