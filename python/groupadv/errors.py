"""The exceptions groupadv raises for bad input, each a ``ValueError`` or ``TypeError``.

The compiled core and the numpy / torch twins raise the same classes with the same messages, so
``except ValueError`` keeps working and ``except groupadv.errors.NonFiniteRewardError as e`` can
read where the problem is:

* ``e.index``: the position of the offending reward in the input (None where no single reward
  is to blame, e.g. a batch std that overflows);
* ``e.group``: the group number (groups are numbered in order: uniform and ragged groups by
  position, labelled groups by first appearance);
* ``e.label``: the label of that group for ``group_ids=`` layouts, else None.

A Rust panic reaching the Python boundary is an :class:`InternalError`: a bug in groupadv,
never the caller's fault; please report it with the input that caused it.
"""

from __future__ import annotations

__all__ = [
    "AdvantageOverflowError",
    "BadLabelError",
    "GroupadvError",
    "InternalError",
    "NonFiniteRewardError",
    "OutOverlapError",
    "SingletonGroupError",
    "ThreadCountError",
]


class GroupadvError(Exception):
    """Base of every groupadv exception; concrete classes also derive from ValueError or
    TypeError. ``index``, ``group`` and ``label`` are None where they do not apply."""

    def __init__(self, message: str = "", *, index: int | None = None, group: int | None = None,
                 label=None):
        super().__init__(message)
        self.index = index
        self.group = group
        self.label = label

    def __reduce__(self):
        # Picklable with its attributes (multiprocessing / ray send exceptions back).
        return (_rebuild, (type(self), str(self), self.__dict__.copy()))


def _rebuild(cls, message, state):
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class NonFiniteRewardError(GroupadvError, ValueError):
    """A NaN or infinite reward under ``nan="raise"``; ``index`` is its position, ``value``
    the reward."""

    def __init__(self, message: str = "", *, value: float | None = None, **where):
        super().__init__(message, **where)
        self.value = value


class SingletonGroupError(GroupadvError, ValueError):
    """A group with one (valid) reward under ``singleton="error"``."""


class AdvantageOverflowError(GroupadvError, ValueError):
    """Finite rewards whose group statistics, batch std or advantages cannot be represented
    (``group`` is None when the batch std overflows)."""


class BadLabelError(GroupadvError, ValueError):
    """A group label that cannot identify a group (NaN); ``index`` is its position in
    ``group_ids``."""


class OutOverlapError(GroupadvError, ValueError):
    """``out=`` shares memory with an input, or a buffer is being written by another call at
    the same time. ``names`` holds the arguments involved."""

    def __init__(self, message: str = "", *, names: tuple = (), **where):
        super().__init__(message, **where)
        self.names = tuple(names)


class ThreadCountError(GroupadvError, ValueError):
    """A thread count out of range (``num_threads=``, ``set_num_threads`` or the
    ``GROUPADV_NUM_THREADS`` environment variable); ``value`` is what was given."""

    def __init__(self, message: str = "", *, value=None, **where):
        super().__init__(message, **where)
        self.value = value


class InternalError(GroupadvError, ValueError):
    """A panic inside the compiled core: a bug in groupadv (please report it)."""


def with_label(err: GroupadvError, groups) -> GroupadvError:
    """Fill ``err.group`` (from ``err.index``) and ``err.label`` from a resolved layout."""
    try:
        if err.group is None and err.index is not None:
            err.group = int(groups.codes()[err.index])
        labels = groups.labels
        if err.label is None and err.group is not None and labels is not None:
            err.label = labels[err.group]
    except Exception:  # noqa: BLE001 - the attributes are a convenience; the error stands
        pass
    return err
