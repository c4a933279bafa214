"""Power-iteration state that follows a weight: WHEN spectral normalization (lipkit/constraints)
and spectral norm regularization (lipkit/penalties/snr.py) refresh their vectors, and HOW
SNR does (spectral normalization refreshes by an exact pair or a Krylov space instead,
norms/krylov.py: one power step per update let its bound be exceeded, issue 11).

- When: an UpdateWatch remembers which values of the weight's tensors the vectors were last
  brought up to date for (their in-place version counters and data pointers: read without a
  host sync), so the vectors move once per weight UPDATE however many times the weight is
  read in one step (D(real), D(fake), a gradient penalty's D(x_interp), a penalty).
- How (SNR): refresh_vectors, n power steps from the stored (u, v), returning NEW tensors;
  the first-use warm-up is the same call with a tolerance.
- Where to: callers rebind their vectors to the result, never write into them, so a graph
  that saved the old vectors stays valid without a clone per read (pytorch#66363).
- Checkpoints: whether the saved vectors were current for the saved weight is saved with
  them (UpdateWatch.is_current); a resumed run then refreshes exactly when the uninterrupted
  run would have (adopt_next: the loaded vectors are adopted for the loaded weight).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from .linalg import as_dtype, power_iteration

WARMUP_MAX_ITER = 500  # power steps at registration / first use: to convergence, at most this many
WARMUP_TOL = 1e-6  # relative change of sigma that counts as converged
# Weight of the previous vector in a power step (zero-weight safety). Its square must not
# underflow float32 (vector_norm squares: 1e-30 gave 0 and then inf), and it must vanish
# next to ||W v||: it does for any weight with sigma above ~1e-8.
TINY = 1e-15

Map = Callable[[Tensor], Tensor]
Key = tuple[tuple[int, int], ...]


def tensors_key(tensors: Sequence[Tensor]) -> Key:
    """Identifies the current values of `tensors` without reading them (no host-device sync):
    `_version` is bumped by every in-place update (optimizer.step, load_state_dict, project_),
    the data pointer catches a tensor swapped for another."""
    return tuple((t._version, t.data_ptr()) for t in tensors)


class UpdateWatch:
    """Which values of some tensors the power-iteration vectors are current for.

    The watched tensors are referenced (they belong to the layer, so this costs nothing) so
    that a freed tensor's memory cannot come back under the same data pointer unnoticed.
    """

    __slots__ = ("key", "refs", "adopt_next")

    def __init__(self) -> None:
        self.key: Key | None = None
        self.refs: tuple[Tensor, ...] | None = None
        self.adopt_next = False  # loaded with tensors the loaded vectors were current for

    def changed(self, tensors: Sequence[Tensor]) -> bool:
        """True when `tensors` changed since mark(); adopts them once after a load that
        said the vectors were current."""
        if tensors_key(tensors) == self.key:
            return False
        if self.adopt_next:
            self.mark(tensors)
            return False
        return True

    def mark(self, tensors: Sequence[Tensor]) -> None:
        """The vectors are now current for these values of `tensors`."""
        self.key, self.refs, self.adopt_next = tensors_key(tensors), tuple(tensors), False

    def reset(self) -> None:
        """Current for nothing: the next training read refreshes (new vectors or shape)."""
        self.key, self.refs, self.adopt_next = None, None, False

    def is_current(self) -> bool:
        """Whether the watched tensors are unchanged since mark() (what a checkpoint saves)."""
        return self.refs is not None and tensors_key(self.refs) == self.key


def refresh_vectors(forward: Map, adjoint: Map, u: Tensor, v: Tensor, n_iter: int, tol: float | None = None,
                    dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """n_iter power-iteration rounds from (u, v), in `dtype` (the weight's compute dtype,
    whatever the stored vectors' dtype); returns NEW tensors (u, v). forward / adjoint map
    one vector (no batch dim) of v's / u's shape to the other.

    Training path (tol None): per half-step one map, one add, one norm, one division and no
    host sync. The previous vector enters with weight TINY, so an all-zero weight keeps its
    old unit vectors (TINY * old / ||TINY * old||) instead of producing 0/0, and a weight with
    sigma above ~1e-8 is unaffected (TINY is below float32 resolution there).
    With `tol` (warm-up): iterate to convergence, reading sigma on the host.
    """
    u, v = as_dtype(u, dtype), as_dtype(v, dtype)
    if tol is not None:  # power_iteration works on batches: add and remove a batch dim
        sigma, new_u, new_v = power_iteration(lambda x: forward(x[0])[None], lambda y: adjoint(y[0])[None],
                                              v[None], n_iter, tol)
        return (new_u[0] if bool(sigma[0] > 0) else u), new_v[0]
    for _ in range(n_iter):
        u = forward(v).add_(u, alpha=TINY)
        u = u / torch.linalg.vector_norm(u)
        v = adjoint(u).add_(v, alpha=TINY)
        v = v / torch.linalg.vector_norm(v)
    return u, v
