"""Group layouts at the API edge: `group_size=`, `offsets=` or `group_ids=`, resolved once
into a backend `Grouping` and wrapped in a reusable `Groups`."""

from __future__ import annotations

import sys
from types import ModuleType

import numpy as np

from . import _backend
from ._inputs import aligned, integer
from .errors import BadLabelError


class Groups:
    """A group layout resolved once, reusable for every reward array of the same length.

    Build it with :func:`make_groups`; pass it as ``groups=`` to any function. Resolving
    string labels (hashing, and for non-contiguous labels building a permutation) is the
    costly part of a labelled call, so reuse pays when several arrays share a layout.
    """

    __slots__ = ("_impl", "_backend", "_labels", "_first", "_ids")

    def __init__(self, impl, backend: str, ids=None, first=None, labels=None, *, within_call=False):
        self._impl = impl
        self._backend = backend
        self._first = first
        if first is not None:
            first.flags.writeable = False
        self._ids = None
        if labels is not None:
            self._labels = labels
            self._labels.flags.writeable = False
        else:
            self._labels = None
            # A layout that lives within one call (`resolve`) gathers its labels only if the
            # call asks for them: a gather of object labels touches every group's label object
            # (a cache miss each), and nearly every call never reads them.
            self._ids = ids
            if not within_call:
                self._gather_labels()

    def _gather_labels(self) -> None:
        # The labels are copied out of the caller's ids: changing the caller's list or array
        # afterwards changes nothing here.
        ids, first, self._ids = self._ids, self._first, None
        if ids is None:
            return
        if isinstance(ids, np.ndarray):
            self._labels = ids[first]
            self._labels.flags.writeable = False
        else:
            self._labels = tuple(ids[i] for i in first.tolist())

    @property
    def n(self) -> int:
        """Number of rewards the layout covers."""
        return self._impl.n

    @property
    def n_groups(self) -> int:
        return self._impl.n_groups

    @property
    def kind(self) -> str:
        """'uniform', 'ragged' or 'permuted' (labels whose rewards are not contiguous)."""
        return self._impl.kind

    def sizes(self) -> np.ndarray:
        """Number of rewards in each group, in group order."""
        return self._impl.sizes()

    def codes(self) -> np.ndarray:
        """Group index (0..n_groups-1) of each reward, in input order."""
        return self._impl.codes()

    @property
    def labels(self):
        """The label of each group (for `group_ids=` layouts; groups are numbered in order of
        first appearance), else None."""
        if self._ids is not None:
            self._gather_labels()
        if self._labels is None or isinstance(self._labels, np.ndarray):
            return self._labels  # read-only
        return list(self._labels)  # a fresh list: mutating it changes nothing here

    @property
    def first_index(self) -> np.ndarray | None:
        """Index of the first reward of each labelled group, else None."""
        return self._first

    def __repr__(self) -> str:
        return f"Groups(kind={self.kind!r}, n={self.n}, n_groups={self.n_groups})"


_UNIFORM: dict = {}  # (backend, n, group_size) -> Groups


def make_groups(n: int | None = None, group_size=None, *, offsets=None, group_ids=None) -> Groups:
    """Resolve a group layout once.

    Exactly one of ``group_size`` (with ``n``), ``offsets`` or ``group_ids`` is given:

    * ``group_size=G``: consecutive groups of G rewards (G must divide n).
    * ``offsets``: integers with ``offsets[0] == 0``, non-decreasing, ``offsets[-1] == n``;
      group g is ``rewards[offsets[g]:offsets[g+1]]`` (empty groups allowed). n defaults
      to ``offsets[-1]``.
    * ``group_ids``: one label per reward (ints or strings, any order), as verl's ``uid``.
      Groups are numbered in order of first appearance. Runs of equal neighbours are found
      first and only their first labels numbered; str objects are matched by identity, then
      by text (equal text, one group); other objects as a Python dict matches them.
    """
    given = [k for k, v in (("group_size", group_size), ("offsets", offsets), ("group_ids", group_ids)) if v is not None]
    if len(given) != 1:
        raise TypeError(
            "give exactly one of group_size=, offsets=, group_ids= (or groups=)"
            + (f"; got {', '.join(given)}" if given else "")
        )
    impl = _backend.impl
    if n is not None:
        n = integer(n, "n")
        if not 0 <= n <= sys.maxsize:
            raise ValueError(f"n must be a number of rewards (0 <= n < 2**63), got {n}")
    if group_size is not None:
        if n is None:
            raise TypeError("group_size= needs the number of rewards n")
        size = integer(group_size, "group_size")
        if not 0 < size <= max(n, 1):
            # Checked here so that both backends give this ValueError (not an OverflowError
            # from the native conversion of a negative or huge size).
            raise ValueError(
                f"group_size={size} does not divide the number of rewards ({n}); "
                "group_size must be a positive divisor of len(rewards)"
            )
        # A uniform layout is immutable and a function of (backend, n, size): the last few are
        # kept, so that small calls repeated with group_size= do not rebuild it (µs per call).
        key = (_backend.name, n, size)
        g = _UNIFORM.get(key)
        if g is None:
            if len(_UNIFORM) >= 32:
                _UNIFORM.clear()
            g = _UNIFORM[key] = Groups(impl.grouping_uniform(n, size), _backend.name)
        return g
    if offsets is not None:
        offs = _offsets_array(offsets)
        if n is None:
            n = int(offs[-1]) if offs.size else 0
        return Groups(impl.grouping_offsets(n, offs), _backend.name)
    return _labelled_groups(impl, n, group_ids, within_call=False)


def _labelled_groups(impl: ModuleType, n: int | None, group_ids, *, within_call: bool) -> Groups:
    if n is not None and len(group_ids) != n:
        raise ValueError(f"group_ids has length {len(group_ids)} but rewards has length {n}")
    ids_in = _ids_array(group_ids)
    grouping, first, *labels = _labelled(impl, ids_in)
    return Groups(grouping, _backend.name, ids_in, first, *labels, within_call=within_call)


def resolve(n: int, group_size=None, offsets=None, group_ids=None, groups=None) -> Groups:
    """The layout for an n-reward call, from whichever keyword the caller used."""
    if groups is None:
        if group_ids is not None and group_size is None and offsets is None:
            # (the layout lives within the call: its labels are gathered only if asked for)
            return _labelled_groups(_backend.impl, n, group_ids, within_call=True)
        return make_groups(n, group_size, offsets=offsets, group_ids=group_ids)
    if any(v is not None for v in (group_size, offsets, group_ids)):
        raise TypeError("give either groups= or one of group_size=, offsets=, group_ids=, not both")
    if not isinstance(groups, Groups):
        raise TypeError(f"groups must be a groupadv.Groups (from make_groups), got {type(groups).__name__}")
    if groups._backend != _backend.name:
        raise ValueError(f"groups was built by the {groups._backend} backend, but the {_backend.name} backend is active")
    if groups.n != n:
        raise ValueError(f"groups covers {groups.n} rewards but rewards has length {n}")
    return groups


def plain_layout(n: int, group_size=None, groups=None) -> Groups | None:
    """:func:`resolve` for the fast path of a call without ``offsets=`` (which the fast path
    hands to the backend itself), where it is cheap: ``groups=`` of this backend and length,
    or a uniform layout already built and cached by :func:`make_groups`. Else None: the
    caller takes :func:`resolve`, which builds, caches or rejects the layout."""
    if groups is not None:
        ok = (group_size is None and type(groups) is Groups
              and groups._backend == _backend.name and groups._impl.n == n)
        return groups if ok else None
    return _UNIFORM.get((_backend.name, n, group_size)) if type(group_size) is int else None


def _offsets_array(offsets) -> np.ndarray:
    if isinstance(offsets, (list, tuple)):
        # numpy would read a bool inside a list as 0/1 and give Python ints beyond int64 the
        # object dtype: name both for what they are
        for v in offsets:
            if isinstance(v, (bool, np.bool_)):
                raise TypeError(f"offsets must be integers, got a bool ({v!r})")
            if isinstance(v, int) and not (-(2**63) <= v < 2**63):
                raise ValueError(f"offsets exceed the int64 range: {v}")
    arr = np.asarray(offsets)
    if arr.ndim != 1:
        raise ValueError(f"offsets must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind == "u":
        # uint64 on both sides: numpy < 2 compares uint64 with a Python int as float64
        if arr.size and arr.max() > np.uint64(np.iinfo(np.int64).max):
            raise ValueError("offsets exceed the int64 range")
    elif arr.dtype.kind != "i":
        if arr.size == 0:
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"offsets must be integers, got dtype {arr.dtype}")
    return aligned(arr, np.int64)


def _ids_array(ids) -> np.ndarray | list | tuple:
    mod = type(ids).__module__
    if mod.startswith("torch"):
        return ids.detach().cpu().numpy()
    if isinstance(ids, np.ndarray) or not isinstance(ids, (list, tuple)):
        return np.asarray(ids)
    return ids


def _nan_label(index: int, label) -> BadLabelError:
    return BadLabelError(
        f"group_ids[{index}] is {label!r}, which is not equal to itself (NaN) and so cannot "
        "identify a group", index=index, label=label,
    )


def _labelled(impl: ModuleType, ids_in: np.ndarray | list | tuple) -> tuple:
    """(layout, first index of each group), and for integer arrays the label of each group
    (gathered by the resolution's own pass: `ids[first]` would cost a cache miss a group)."""
    if isinstance(ids_in, np.ndarray):
        if ids_in.ndim != 1:
            raise ValueError(f"group_ids must be 1-D, got shape {ids_in.shape}")
        kind = ids_in.dtype.kind
        if ids_in.size == 0:
            raise ValueError("group_ids is empty")
        if kind in "iub":
            if kind == "u" and ids_in.dtype.itemsize == 8:
                # A bit-for-bit view keeps distinct labels distinct.
                native = ids_in.dtype.newbyteorder("=")
                g, first, labels = impl.grouping_ids_int(aligned(ids_in, native).view(np.int64), with_labels=True)
                return g, first, labels.view(native).astype(ids_in.dtype, copy=False)
            g, first, labels = impl.grouping_ids_int(aligned(ids_in, np.int64), with_labels=True)
            # The labels came from ids_in's dtype: converting back is exact.
            return g, first, labels.astype(ids_in.dtype, copy=False)
        if kind == "f":
            nans = np.flatnonzero(np.isnan(ids_in))
            if nans.size:
                i = int(nans[0])
                raise _nan_label(i, ids_in[i])
            # Equal floats have equal bits once -0.0 is folded into 0.0.
            bits = (ids_in.astype(np.float64) + 0.0).view(np.int64)
            return impl.grouping_ids_int(bits)
        if kind in "US":
            rows = aligned(ids_in)
            return impl.grouping_ids_bytes(rows.view(np.uint8).reshape(len(rows), rows.dtype.itemsize))
        if kind != "O":
            raise TypeError(f"group_ids must be ints or strings, got dtype {ids_in.dtype}")
    try:
        # Exact str labels (a list, or an object array read in place).
        return impl.grouping_ids_str(ids_in)
    except TypeError:
        pass
    # Mixed or non-str hashable labels (str subclasses on the native backend, which may define
    # their own __eq__ / __hash__): number them by first appearance here, as a dict does.
    seen: dict = {}
    try:
        codes = np.fromiter((seen.setdefault(u, len(seen)) for u in ids_in), dtype=np.int64, count=len(ids_in))
    except TypeError as e:
        raise TypeError(f"group_ids must be hashable labels: {e}") from None
    except Exception as e:  # noqa: BLE001 - a label's own __hash__ / __eq__ raised
        raise TypeError(f"group_ids: hashing or comparing a label raised {type(e).__name__}: {e}") from e
    if codes.size == 0:
        raise ValueError("group_ids is empty")
    # A label not equal to itself (float('nan') objects, NaT, Decimal NaN) would be grouped by
    # identity: each NaN object its own group. That is never what a caller means.
    for label, code in seen.items():
        try:
            same = label != label
        except Exception as e:  # noqa: BLE001 - a label's own __ne__ raised
            raise TypeError(f"group_ids: comparing the label {label!r} raised {type(e).__name__}: {e}") from e
        try:
            unequal = bool(same)
        except TypeError:  # pd.NA: no truth value; a missing label
            unequal = True
        if unequal:
            raise _nan_label(int(np.argmax(codes == code)), label)
    return impl.grouping_ids_int(codes)
