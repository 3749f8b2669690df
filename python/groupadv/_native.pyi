"""Stubs of the compiled module ``groupadv._native`` (src/lib.rs). The pure-numpy module
``groupadv._numpy`` implements the same functions with the same signatures."""

import numpy as np
import numpy.typing as npt
from collections.abc import Iterable

__version__: str

class Grouping:
    """A resolved group layout."""

    @property
    def n(self) -> int: ...
    @property
    def n_groups(self) -> int: ...
    @property
    def kind(self) -> str: ...
    def sizes(self) -> npt.NDArray[np.int64]: ...
    def codes(self) -> npt.NDArray[np.int64]: ...

def grouping_uniform(n: int, group_size: int) -> Grouping: ...
def grouping_offsets(n: int, offsets: npt.NDArray[np.int64]) -> Grouping: ...
def grouping_ids_int(ids: npt.NDArray[np.int64]) -> tuple[Grouping, npt.NDArray[np.int64]]: ...
def grouping_ids_bytes(rows: npt.NDArray[np.uint8]) -> tuple[Grouping, npt.NDArray[np.int64]]: ...
def grouping_ids_str(ids: Iterable[str]) -> tuple[Grouping, npt.NDArray[np.int64]]: ...
def advantages(
    rewards: npt.NDArray[np.floating],
    out: npt.NDArray[np.floating],
    grouping: Grouping,
    center: str,
    scale: str,
    ddof: int,
    eps: float,
    singleton: str,
    nan: str,
    num_threads: int,
    batch_std: float | None = None,
    moments: tuple[
        npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]
    ]
    | None = None,
) -> None: ...

_Record = tuple[
    npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]
]

def group_moments(
    rewards: npt.NDArray[np.floating],
    grouping: Grouping,
    nan: str,
    weights: npt.NDArray[np.float64] | None,
    num_threads: int,
) -> _Record: ...
def merge_moments(a: _Record, b: _Record) -> _Record: ...
def moments_std(m: _Record, ddof: int) -> npt.NDArray[np.float64]: ...
def group_stats(
    rewards: npt.NDArray[np.floating], grouping: Grouping, ddof: int, nan: str, num_threads: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...
def batch_moments(
    rewards: npt.NDArray[np.floating], grouping: Grouping, nan: str, num_threads: int
) -> tuple[int, float, float, int, float]: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def _after_fork_in_child() -> None: ...
def token_scores(
    tokens: npt.NDArray[np.floating], offsets: npt.NDArray[np.int64] | None, num_threads: int
) -> npt.NDArray[np.floating]: ...
def broadcast_tokens(
    adv: npt.NDArray[np.floating],
    mask: npt.NDArray[np.uint8] | npt.NDArray[np.floating] | None,
    offsets: npt.NDArray[np.int64] | None,
    out: npt.NDArray[np.floating],
    num_threads: int,
) -> None: ...
