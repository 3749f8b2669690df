"""Labels in the layouts verl produces, resolved by their fast paths (runs of equal labels,
str objects by identity), must group exactly as numbering every label on its own with a Python
dict does: codes in order of first appearance, first indices, labels, kind."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import groupadv as ga
from groupadv import _backend
from groupadv.errors import BadLabelError


def dict_codes(labels):
    """The reference: one dict lookup per label (Python hash / eq)."""
    seen: dict = {}
    return np.array([seen.setdefault(u, len(seen)) for u in labels], dtype=np.int64)


def check_grouping(ids, *, contiguous=None):
    ref = dict_codes(list(ids))
    g = ga.make_groups(group_ids=ids)
    np.testing.assert_array_equal(g.codes(), ref)
    first = np.unique(ref, return_index=True)[1]  # the first index of each code
    np.testing.assert_array_equal(g.first_index, first)
    assert list(g.labels) == [ids[i] for i in first]
    if isinstance(ids, np.ndarray) and ids.dtype.kind in "iub":
        assert g.labels.dtype == ids.dtype and not g.labels.flags.writeable
    is_contiguous = bool(np.all(np.diff(ref) >= 0))
    assert g.kind == ("ragged" if is_contiguous else "permuted")
    if contiguous is not None:
        assert is_contiguous == contiguous
    np.testing.assert_array_equal(g.sizes(), np.bincount(ref))
    return g


def uid(k: int) -> str:
    return f"{k:08x}-5f1c-4e2a-9b7d-{k * 2654435761 % (1 << 48):012x}"


def fresh(s: str) -> str:
    """A str equal to ``s`` but a distinct object."""
    t = "".join(list(s))
    assert t == s and (t is not s or len(s) <= 1)
    return t


# ---- int labels -------------------------------------------------------------------------


def test_blocks_in_shuffled_order_are_contiguous():
    """verl after balance_batch: each prompt's block whole, blocks reordered (large enough for
    the parallel run search, whose ranges cut inside runs)."""
    rng = np.random.default_rng(0)
    ids = np.repeat(rng.permutation(20_000) * 7 + 3, 16)
    g = check_grouping(ids, contiguous=True)
    x = rng.standard_normal(len(ids)).astype(np.float32)
    ref = ga.advantages(x, group_ids=ids.astype(str))  # the same groups, by another path
    np.testing.assert_allclose(ga.advantages(x, groups=g), ref, rtol=1e-5, atol=1e-5)


def test_runs_that_come_back_join_their_group():
    ids = np.repeat(np.array([5, 9, 5, 2, 9, 9, 7]), [3, 1, 4, 16, 2, 5, 1])
    check_grouping(ids, contiguous=False)
    big = np.concatenate([np.repeat(np.arange(10_000), 16), [17] * 3, np.arange(5)])
    check_grouping(big, contiguous=False)


def test_sparse_and_extreme_int_labels_in_runs():
    i64 = np.iinfo(np.int64)
    ids = np.repeat(np.array([i64.max, i64.min, 0, -1, i64.max, 2**40]), [5, 7, 3, 9, 2, 40])
    check_grouping(ids, contiguous=False)
    check_grouping(np.repeat(np.array([i64.min, i64.max]), 50_000), contiguous=True)
    u = np.repeat(np.array([2**64 - 1, 2**63, 1], dtype=np.uint64), 40)
    g = check_grouping(u, contiguous=True)
    assert g.n_groups == 3


def test_shuffled_int_labels():
    rng = np.random.default_rng(1)
    ids = np.repeat(np.arange(5000), 16)
    rng.shuffle(ids)
    check_grouping(ids, contiguous=False)


def _same_results(x, g, offsets):
    """Advantages and moments of layout ``g`` equal, bit for bit, those of ``offsets=``."""
    for kw in ({}, {"center": "loo"}, {"scale": "batch"}, {"ddof": 1, "eps": 1e-6}, {"singleton": "raw"}):
        np.testing.assert_array_equal(ga.advantages(x, groups=g, **kw), ga.advantages(x, offsets=offsets, **kw))


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int8, np.uint64, ">i8", np.uint16])
def test_blocks_of_one_size_in_any_order(dtype):
    """verl's batch: each prompt's block of one size whole, blocks reordered. Resolved to groups of
    one size (reported "ragged", as contiguous labels of any size), with the same results as
    offsets=, labels of the caller's dtype, and a pickle round trip."""
    import pickle

    rng = np.random.default_rng(5)
    k, size = 9000, 16
    values = rng.permutation(k)
    if np.dtype(dtype) == np.uint64:
        values = values.astype(np.uint64) + np.uint64(2**63)
    elif np.dtype(dtype).itemsize == 1:
        k, values = 100, rng.permutation(100) - 50
    ids = np.repeat(np.asarray(values).astype(dtype), size)
    g = check_grouping(ids, contiguous=True)
    assert g.kind == "ragged" and (g.sizes() == size).all()
    x = rng.standard_normal(len(ids)).astype(np.float32)
    _same_results(x, g, np.arange(0, len(ids) + 1, size))
    back = pickle.loads(pickle.dumps(g))
    assert back.kind == "ragged"
    np.testing.assert_array_equal(back.codes(), g.codes())
    np.testing.assert_array_equal(ga.advantages(x, groups=back), ga.advantages(x, groups=g))


def test_large_layouts_of_every_kind():
    """Above the parallel threshold: one giant run, all singletons, blocks of one size with a label
    that comes back later, neighbouring blocks of one label (a longer run), a length that is not a
    multiple of the first run, bools."""
    n = 3 * 2**17
    blocks = np.repeat(np.random.default_rng(6).permutation(n // 8), 8)
    came_back = blocks.copy()
    came_back[-8:] = blocks[0]
    doubled = blocks.copy()
    doubled[8:16] = blocks[0]
    for ids, contiguous in [
        (np.full(n, 7), True),
        (np.arange(n)[::-1].copy(), True),
        (came_back, False),
        (doubled, True),
        (np.concatenate([blocks, [-1, -1, -1]]), True),
        (np.repeat(np.array([True, False, True]), [n, 5, 9]), False),
    ]:
        g = check_grouping(ids, contiguous=contiguous)
        if contiguous:
            x = np.random.default_rng(7).standard_normal(len(ids))
            _same_results(x, g, np.concatenate([g.first_index, [len(ids)]]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 6), st.integers(1, 70)), min_size=1, max_size=40))
def test_int_runs_property(runs):
    ids = np.repeat(np.array([v for v, _ in runs], dtype=np.int64), [n for _, n in runs])
    check_grouping(ids)


# ---- str labels as objects ----------------------------------------------------------------


def test_np_repeat_uids_identical_objects():
    """verl's DataProto.repeat: np.repeat of an object array, equal labels the same object."""
    names = np.array([uid(k) for k in range(3000)], dtype=object)
    ids = np.repeat(names, 16)
    assert ids[0] is ids[15]
    check_grouping(ids, contiguous=True)
    rng = np.random.default_rng(2)
    check_grouping(ids[rng.permutation(len(ids))], contiguous=False)
    blocks = np.repeat(names[rng.permutation(len(names))], 16)
    check_grouping(blocks, contiguous=True)


def test_np_repeat_uids_match_offsets():
    """uids in blocks of one size (np.repeat of distinct str objects, blocks reordered): the same
    results as offsets=, bit for bit; a uid that comes back in a later block joins its group."""
    rng = np.random.default_rng(8)
    names = np.array([uid(k) for k in range(4000)], dtype=object)
    ids = np.repeat(names[rng.permutation(len(names))], 8)
    g = check_grouping(ids, contiguous=True)
    x = rng.standard_normal(len(ids)).astype(np.float32)
    _same_results(x, g, np.arange(0, len(ids) + 1, 8))
    again = np.concatenate([ids, ids[:8], np.repeat(np.array([fresh(ids[100])], dtype=object), 8)])
    g = check_grouping(again, contiguous=False)
    assert g.n_groups == len(names)


def test_equal_text_distinct_objects_are_one_group():
    """Distinct str objects with equal text, interleaved with identical ones, in runs and not."""
    a, b = uid(1), uid(2)
    ids = np.array([a, a, fresh(a), a, b, fresh(b), fresh(a), b, b, fresh(b)], dtype=object)
    assert ids[1] is not ids[2]
    g = check_grouping(ids, contiguous=False)
    assert g.n_groups == 2
    # a run of identical objects then a run of an equal but distinct object: still contiguous
    ids = np.array([a] * 5 + [fresh(a)] * 3 + [b] * 4 + [fresh(b)], dtype=object)
    g = check_grouping(ids, contiguous=True)
    assert g.n_groups == 2 and list(g.sizes()) == [8, 5]


def test_lists_and_strided_object_arrays():
    names = [uid(k) for k in range(50)]
    ids = [names[k // 4] for k in range(200)]
    check_grouping(ids, contiguous=True)
    check_grouping(tuple(ids), contiguous=True)
    arr = np.array(ids, dtype=object)
    check_grouping(arr[::3])
    check_grouping(arr[::-1], contiguous=True)


def test_mixed_objects_nan_and_surrogates():
    nan = float("nan")
    with pytest.raises(BadLabelError) as e:
        ga.make_groups(group_ids=np.array(["a", "a", nan, nan, "b"], dtype=object))
    assert e.value.index == 2
    with pytest.raises(BadLabelError):
        ga.make_groups(group_ids=np.array([nan] * 10, dtype=object))  # one object, one run
    g = check_grouping(np.array([1, 1, "1", "1", 1, None, None, 1.0], dtype=object))
    assert g.n_groups == 3  # 1 == 1.0 (as a dict), "1" and None apart
    check_grouping(np.array(["\ud800"] * 3 + ["a"] * 2 + ["\ud800"], dtype=object), contiguous=False)
    with pytest.raises(TypeError, match="hashable"):
        ga.make_groups(group_ids=np.array(["a", "a", [1]], dtype=object))


class Caseless(str):
    """A str subclass with its own equality: "A" and "a" are equal."""

    def __eq__(self, other):
        return isinstance(other, str) and self.lower() == other.lower()

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash(self.lower())


@pytest.mark.skipif(_backend.name != "native", reason="the numpy backend groups objects with np.unique")
def test_str_subclasses_group_as_a_dict():
    """Labels other than exact str are grouped by their own __hash__ / __eq__, as a dict does."""
    ids = np.array([Caseless("A"), "a", "a", Caseless("b"), "B", Caseless("a")], dtype=object)
    g = check_grouping(ids, contiguous=False)
    assert g.n_groups == 3


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(1, 20), st.sampled_from(["same", "fresh", "alt"])),
             min_size=1, max_size=30),
    st.booleans(),
)
def test_str_runs_property(runs, as_list):
    """Runs of uids: the same object, fresh equal objects, or alternating the two."""
    names = [uid(k) for k in range(6)]
    ids = []
    for k, n, how in runs:
        for j in range(n):
            ids.append(names[k] if how == "same" or (how == "alt" and j % 2) else fresh(names[k]))
    check_grouping(ids if as_list else np.array(ids, dtype=object))


def test_advantages_match_reference_on_uids():
    rng = np.random.default_rng(3)
    names = np.array([uid(k) for k in range(500)], dtype=object)
    ids = np.repeat(names, 8)
    x = rng.standard_normal(len(ids))
    codes = dict_codes(ids)
    mean = np.bincount(codes, x) / np.bincount(codes)
    std = np.sqrt(np.bincount(codes, (x - mean[codes]) ** 2) / np.bincount(codes))
    want = (x - mean[codes]) / std[codes]
    np.testing.assert_allclose(ga.advantages(x, group_ids=ids, eps=0.0), want, rtol=1e-9, atol=1e-12)
    p = rng.permutation(len(ids))
    np.testing.assert_allclose(ga.advantages(x[p], group_ids=ids[p], eps=0.0), want[p], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["object array", "list"])
def test_labels_of_a_layout_within_a_call(kind):
    """A layout resolved inside a call (`resolve`) gathers its labels only when asked for
    (`group_stats` asks): the same labels as `make_groups`, and a layout from `make_groups`
    keeps them when the caller's labels change afterwards."""
    from groupadv._groups import resolve

    uids = [uid(k) for k in np.random.default_rng(5).permutation(300)]
    ids = np.repeat(np.array(uids, dtype=object), 4)
    ids = ids if kind == "object array" else list(ids)
    g = resolve(len(ids), group_ids=ids)
    assert g._labels is None  # not gathered yet
    assert list(g.labels) == uids == list(ga.make_groups(group_ids=ids).labels)
    x = np.random.default_rng(6).random(len(ids))
    assert list(ga.group_stats(x, group_ids=ids).labels) == uids
    kept = ga.make_groups(group_ids=ids)
    ids[0] = "changed"
    assert list(kept.labels) == uids


@pytest.mark.parametrize("kind", ["object array", "list"])
def test_large_shuffled_str_labels(kind):
    """Shuffled str labels above the parallel threshold (numbered by address in ranges on
    several threads, then joined): the dict's numbering, with distinct objects of equal text
    (one group) spread over every range."""
    n = 3 * 2**17 + 5
    rng = np.random.default_rng(11)
    objs = [uid(k) for k in range(5000)]
    twins = ["".join(list(o)) for o in objs[:50]]  # equal text, other objects
    assert all(a is not b for a, b in zip(objs, twins))
    ids = np.array(objs + twins, dtype=object)[rng.integers(0, len(objs) + len(twins), n)]
    check_grouping(ids if kind == "object array" else list(ids), contiguous=False)
