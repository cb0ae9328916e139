"""Data-parallel training across processes and machines: :class:`NodeInfo` over MPI, or NCCL for GPU buffers.

Every process (a *rank*) holds a full replica of the model and computes
gradients on its own shard of each batch (:func:`puzzle_rms.data.shardBatch`).
Pass ``nodeinfo=NodeInfo()`` to an optimizer and the replicas stay equal:

* ``setupOn(..., useGlobalState=True)`` broadcasts each flat weight buffer from
  rank 0 (:meth:`NodeInfo.broadcast`), so all replicas start from rank 0's weights;
* ``update()`` replaces each flat gradient buffer by its mean over the ``P`` ranks
  (:meth:`NodeInfo.allreduceMean`), one collective per bucket, i.e. per dtype::

      g <- (1 / P) * sum_r g_r

  before the non-finite check, clipping and the kernel. With equal shards and a
  cost that averages over the batch (MSE, CrossEntropy), the mean of the shard
  gradients is the gradient of the whole batch, so ``P`` ranks take the same
  steps as one process on the whole batch. Everything after the mean sees the
  same numbers on every rank: a NaN/inf on any rank reaches all of them (all skip
  the step, or all raise), and global-norm clipping uses the norm of the mean.

Transport, chosen per buffer from its array type (the optimizer does not branch):

* host arrays (the NumPy and Numba backends): MPI through mpi4py's buffer
  interface, in place (``MPI_IN_PLACE``), no pickling;
* CuPy arrays: NCCL (``cupy.cuda.nccl``), on the current stream, when CuPy was
  built with it; the communicator is created on the first GPU buffer, with its
  unique id sent from rank 0 over MPI. Without NCCL (or with ``nccl=False``) the
  buffer is copied to the host, reduced over MPI and copied back: correct, but it
  costs two PCIe transfers of the buffer per step.

float16 gradients are reduced in float32: MPI has no float16 sum, and a float16
sum of ``P`` scaled gradients can overflow where each one does not. The buffer is
cast into a float32 scratch copy, summed, divided by ``P`` and cast back (twice
the bytes on the wire of a float16 reduction). Broadcasts move raw bytes, any dtype.

Multi-machine runs need nothing more: start the same script with the MPI
launcher and a hostfile (``mpiexec -f hostfile -n 4 python -m mpi4py train.py``
for MPICH, ``mpiexec --hostfile hostfile -n 4 python -m mpi4py ...`` for Open MPI).

Failures end the whole job, never hang it:

* an uncaught exception on any rank prints its traceback and aborts every rank
  (``MPI_Abort``) from an exception hook that :class:`NodeInfo` installs; under
  ``python -m mpi4py`` mpi4py does the same;
* a host collective that has not completed ``timeout`` seconds after it started
  (a rank that crashed without an exception, hangs, or ran fewer steps) prints
  which collective and which update it was and aborts every rank. The
  collectives are non-blocking MPI calls polled against that deadline;
* at ``setupOn`` the ranks compare the backend, every variable's name, shape and
  dtype and the optimizer's hyperparameters (:meth:`NodeInfo.checkSame`), and all
  raise the same ValueError naming what differs on which rank.

NCCL collectives run asynchronously on the GPU stream and are not timed.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from typing import Any, Callable, Optional

import numpy as np

from puzzle_rms import backends

_INSTALL_HINT = "pip install mpi4py mpich (from a puzzle_rms clone: pip install -e '.[mpi]')"
DEFAULT_TIMEOUT = 300.0  # seconds a host collective may take before the job is aborted
_POLL_PAUSE = 1e-3
_ABORT_GRACE = 1.0  # seconds between printing why the job is aborted and aborting it  # the longest sleep between two polls of a pending collective


def _mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(f"puzzle_rms.distributed needs mpi4py and an MPI library: {_INSTALL_HINT}") from error
    return MPI


class _MpiHost:
    """Collectives on host (NumPy) buffers over an MPI communicator, each waited for against a deadline.

    ``expire(what)`` is called (and must not return) when a collective has not completed within ``timeout``
    seconds; ``timeout=None`` waits forever.
    """

    def __init__(self, MPI: Any, comm: Any, timeout: Optional[float], expire: Callable[[str], None]) -> None:
        self.MPI, self.comm, self.size = MPI, comm, comm.Get_size()
        self.timeout, self.expire = timeout, expire
        self.scratch: dict[int, np.ndarray] = {}

    def wait(self, request: Any, what: str) -> None:
        """Poll ``request`` until it completes, sleeping a little longer each time (MPI progresses in Test)."""
        deadline = math.inf if self.timeout is None else time.monotonic() + self.timeout
        pause = 0.0
        while not request.Test():
            if time.monotonic() > deadline:
                self.expire(what)
            time.sleep(pause)
            pause = min(2 * pause + 1e-6, _POLL_PAUSE)

    def broadcast(self, flat: np.ndarray, what: str) -> None:
        self.wait(self.comm.Ibcast([flat.view(np.uint8), self.MPI.BYTE], root=0), f"broadcast ({what})")

    def allreduceMean(self, flat: np.ndarray, what: str) -> None:
        if flat.dtype == np.float16:
            scratch = self.scratch.get(flat.size)
            if scratch is None:
                scratch = self.scratch[flat.size] = np.empty(flat.size, np.float32)
            np.copyto(scratch, flat)
            self._sumMean(scratch, what)
            np.copyto(flat, scratch, casting="same_kind")
        else:
            self._sumMean(flat, what)

    def _sumMean(self, flat: np.ndarray, what: str) -> None:
        self.wait(self.comm.Iallreduce(self.MPI.IN_PLACE, flat, op=self.MPI.SUM), f"allreduce ({what})")
        flat /= self.size

    def allgather(self, row: np.ndarray, what: str) -> np.ndarray:
        """Every rank's ``row`` (same length and dtype on all ranks), stacked in rank order."""
        table = np.empty((self.size, row.size), row.dtype)
        self.wait(self.comm.Iallgather(row, table), f"allgather ({what})")
        return table

    def allgatherBytes(self, data: bytes, what: str) -> list[bytes]:
        """Every rank's ``data`` (any length), in rank order."""
        lengths = self.allgather(np.array([len(data)], np.int64), what)[:, 0]
        table = np.empty(int(lengths.sum()), np.uint8)
        offsets = np.cumsum(lengths) - lengths
        self.wait(self.comm.Iallgatherv(np.frombuffer(data, np.uint8),
                                        [table, (lengths.tolist(), offsets.tolist()), self.MPI.BYTE]),
                  f"allgather ({what})")
        return [table[o:o + n].tobytes() for o, n in zip(offsets.tolist(), lengths.tolist())]

    def barrier(self, what: str) -> None:
        self.wait(self.comm.Ibarrier(), f"barrier ({what})")


class _HostCopy:
    """Device buffers through host memory: copy out, reduce over MPI, copy back."""

    def __init__(self, host: _MpiHost) -> None:
        self.host = host

    def broadcast(self, flat: Any, what: str) -> None:
        self._roundTrip(flat, self.host.broadcast, what)

    def allreduceMean(self, flat: Any, what: str) -> None:
        self._roundTrip(flat, self.host.allreduceMean, what)

    @staticmethod
    def _roundTrip(flat: Any, collective: Any, what: str) -> None:
        backend = backends.current()
        hostCopy = backend.to_host(flat)  # a copy, since the buffer lives on a device
        collective(hostCopy, what)
        backend.copy_cast(flat, backend.to_device(hostCopy))


class _Nccl:
    """Collectives on CuPy buffers over an NCCL communicator, queued on the current stream."""

    def __init__(self, comm: Any, rank: int, size: int) -> None:
        import cupy
        from cupy.cuda import nccl

        self.cupy, self.nccl, self.size = cupy, nccl, size
        uniqueId = comm.bcast(nccl.get_unique_id() if rank == 0 else None, root=0)
        self.comm = nccl.NcclCommunicator(size, uniqueId, rank)
        self.types = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}

    def broadcast(self, flat: Any, what: str) -> None:
        self.comm.bcast(flat.data.ptr, flat.nbytes, self.nccl.NCCL_UINT8, 0, self.cupy.cuda.get_current_stream().ptr)

    def allreduceMean(self, flat: Any, what: str) -> None:
        work = flat.astype(self.cupy.float32) if flat.dtype == np.float16 else flat
        self.comm.allReduce(work.data.ptr, work.data.ptr, work.size, self.types[work.dtype], self.nccl.NCCL_SUM,
                            self.cupy.cuda.get_current_stream().ptr)
        work /= self.size
        if work is not flat:
            flat[...] = work


def _ncclAvailable() -> bool:
    try:
        from cupy.cuda import nccl
    except ImportError:
        return False
    return bool(getattr(nccl, "available", False))


class NodeInfo:
    """One process's place in a data-parallel run (PuzzleLib's ``nodeinfo``), over an MPI communicator.

    ``NodeInfo()`` reads the MPI world of the processes started by ``mpiexec``; a
    script started without ``mpiexec`` is a world of one, where every collective
    returns at once. Pass it to an optimizer (``RMSProp(..., nodeinfo=node)``) and
    call ``setupOn(model, useGlobalState=True)``; see the module docstring for what
    the optimizer does with it, and for how failures end the job.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm, optional
        The processes that train together; ``MPI.COMM_WORLD`` by default.
    nccl : bool, optional
        Transport for CuPy buffers: None (default) uses NCCL when CuPy has it and
        MPI with a host copy otherwise; True requires NCCL; False always copies
        through the host. Host buffers always go over MPI.
    timeout : float or None
        Seconds a host collective may wait for the other ranks before the whole job is
        aborted with a message naming the collective (default 300); None waits forever.
    abortOnError : bool
        Install an exception hook that aborts every rank when this one dies of an uncaught
        exception (default True; it takes effect only with more than one rank).

    Attributes
    ----------
    rank, size : int
        This process's index and the number of processes.
    localRank, localSize : int
        The same on this machine only (pick the GPU with :meth:`useLocalDevice`).
    """

    def __init__(self, comm: Any = None, nccl: Optional[bool] = None, timeout: Optional[float] = DEFAULT_TIMEOUT,
                 abortOnError: bool = True) -> None:
        MPI = _mpi()
        comm = MPI.COMM_WORLD if comm is None else comm
        if not isinstance(comm, MPI.Intracomm):
            raise TypeError(f"NodeInfo: comm must be an mpi4py intracommunicator (e.g. MPI.COMM_WORLD), "
                            f"got {type(comm).__name__}")
        if nccl is not None and not isinstance(nccl, bool):
            raise TypeError(f"NodeInfo: nccl must be None, True or False, got {nccl!r} ({type(nccl).__name__})")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not 0 < timeout < math.inf):
            raise ValueError(f"NodeInfo: timeout must be a positive finite number of seconds or None, got {timeout!r}")
        if not isinstance(abortOnError, bool):
            raise TypeError(f"NodeInfo: abortOnError must be True or False, got {abortOnError!r}")
        if nccl and not _ncclAvailable():
            raise RuntimeError("NodeInfo: nccl=True but CuPy with NCCL is not importable here; pass nccl=None to "
                               "fall back to MPI through host memory")
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.localRank, self.localSize = local.Get_rank(), local.Get_size()
        local.Free()
        self.timeout = None if timeout is None else float(timeout)
        self._nccl = nccl
        self._host = _MpiHost(MPI, comm, self.timeout, self._expire)
        self._device: Any = None
        self._backendsAgree = False
        if abortOnError and self.size > 1:
            _install_abort_hook(comm)

    def __repr__(self) -> str:
        return f"NodeInfo(rank={self.rank}, size={self.size}, localRank={self.localRank})"

    @property
    def isRoot(self) -> bool:
        """Whether this is rank 0: the rank that writes checkpoints, logs and plots."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank gets here (e.g. before the other ranks read a checkpoint rank 0 wrote)."""
        self._host.barrier("NodeInfo.barrier")

    # --- the collectives the optimizer calls ----------------------------------------------------
    def broadcast(self, flatArray: Any, what: str = "NodeInfo.broadcast") -> None:
        """Overwrite ``flatArray`` on every rank with rank 0's values, in place (any dtype, C-contiguous).

        ``what`` names the call in the message of a timeout.
        """
        flat = self._flat("broadcast", flatArray, floating=False)
        if self.size > 1:
            self._checkBackends()
            self._transport(flat).broadcast(flat, what)

    def allreduceMean(self, flatArray: Any, what: str = "NodeInfo.allreduceMean") -> None:
        """Replace ``flatArray`` by its mean over all ranks, in place: ``a <- (1/size) * sum_r a_r``.

        ``flatArray`` must be a C-contiguous float16/32/64 array of the same shape on every rank;
        float16 is summed in float32 (see the module docstring). ``what`` names the call in the message
        of a timeout.
        """
        flat = self._flat("allreduceMean", flatArray, floating=True)
        if self.size > 1:
            self._checkBackends()
            self._transport(flat).allreduceMean(flat, what)

    def meanValue(self, value: float, what: str = "NodeInfo.meanValue") -> float:
        """The mean of a Python number over all ranks (e.g. to report the loss of the whole batch)."""
        buffer = np.array([value], dtype=np.float64)
        if self.size > 1:
            self._host.allreduceMean(buffer, what)
        return float(buffer[0])

    def checkSame(self, what: str, description: dict[str, dict[str, str]]) -> None:
        """Raise ValueError on every rank unless every rank passed an equal ``description``.

        ``description`` maps sections (e.g. ``"variables"``) to ``{key: value}`` string tables. The ranks
        first compare a SHA-256 digest of it; only when the digests differ do they exchange the tables, so
        that the error (the same on every rank) lists each key whose value differs from rank 0's, per rank.
        """
        if self.size == 1:
            return
        text = json.dumps(description, sort_keys=True).encode("utf-8")
        digests = self._host.allgather(np.frombuffer(hashlib.sha256(text).digest(), np.uint8), what)
        if (digests == digests[0]).all():
            return
        tables = [json.loads(data) for data in self._host.allgatherBytes(text, what)]
        lines = []
        for rank, table in enumerate(tables[1:], start=1):
            for section in sorted(set(tables[0]) | set(table)):
                mine, theirs = tables[0].get(section, {}), table.get(section, {})
                for key in sorted(set(mine) | set(theirs)):
                    if mine.get(key) != theirs.get(key):
                        lines.append(f"{section} {key!r}: rank 0: {mine.get(key, '(none)')}; "
                                     f"rank {rank}: {theirs.get(key, '(none)')}")
        raise ValueError(f"{what}: the {self.size} ranks disagree, so they would train on each other's bytes or "
                         f"drift apart; every rank must build the same model and optimizer:\n"
                         + "\n".join(f"  - {line}" for line in lines))

    # --- GPU placement --------------------------------------------------------------------------
    def useLocalDevice(self) -> Optional[int]:
        """On the CuPy backend, make GPU ``localRank % deviceCount`` current and return its index.

        Call it before building the model, so that each rank on a machine works on its own GPU (NCCL
        refuses two ranks on one device). Returns None on a host backend, where there is nothing to pick.
        """
        return backends.current().use_local_device(self.localRank)

    # --- internals ------------------------------------------------------------------------------
    def _checkBackends(self) -> None:
        """Before the first buffer collective: every rank must use rank 0's backend, or all ranks raise.

        A rank whose CuPy probe failed (``auto`` then picks numba) would otherwise send host buffers over
        MPI while the others use NCCL: a hang, or different numbers on different ranks.
        """
        if self._backendsAgree:
            return
        names = [name.decode() for name in self._host.allgatherBytes(backends.current().name.encode(),
                                                                     "NodeInfo: backend check")]
        if any(name != names[0] for name in names):
            ranks = ", ".join(f"rank {rank}: {name}" for rank, name in enumerate(names))
            raise RuntimeError(
                f"NodeInfo: the ranks use different array backends ({ranks}); every rank must use rank 0's "
                f"{names[0]!r}. Set {backends.ENV_VAR}={names[0]} on every rank, or see why a rank cannot use it "
                f"with puzzle_rms.backends.unavailable_reason({names[0]!r}) on that rank")
        self._backendsAgree = True

    def _flat(self, method: str, array: Any, floating: bool) -> Any:
        dtype = getattr(array, "dtype", None)
        flags = getattr(array, "flags", None)
        if dtype is None or flags is None or not flags.c_contiguous:
            raise TypeError(f"NodeInfo.{method}: expected a C-contiguous array, got "
                            f"{type(array).__name__}{'' if flags is None else ' that is not C-contiguous'}")
        if floating and np.dtype(dtype) not in (np.float16, np.float32, np.float64):
            raise TypeError(f"NodeInfo.{method}: expected a float16, float32 or float64 array, got dtype {dtype}")
        return array.reshape(-1)

    def _expire(self, what: str) -> None:
        """A collective timed out: say which, on which rank, and abort every rank (does not return)."""
        _report_and_abort(self.comm, f"rank {self.rank} of {self.size}: {what} did not complete within "
                                     f"{self.timeout:g} s (NodeInfo timeout): another rank stopped, crashed, hangs "
                                     f"or runs a different number of steps")

    def _transport(self, flat: Any) -> Any:
        if isinstance(flat, np.ndarray):
            return self._host
        if self._device is None:
            useNccl = _ncclAvailable() if self._nccl is None else self._nccl
            self._device = _Nccl(self.comm, self.rank, self.size) if useNccl else _HostCopy(self._host)
        return self._device


def _report_and_abort(comm: Any, message: str) -> None:
    """Print ``message`` and end every rank of ``comm`` with exit code 1."""
    sys.stderr.write(f"puzzle_rms.distributed: {message}; aborting all ranks\n")
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(_ABORT_GRACE)  # MPI_Abort kills at once: give the launcher time to forward what was printed
    comm.Abort(1)


_hooked: set[int] = set()


def _install_abort_hook(comm: Any) -> None:
    """Make an uncaught exception in this process abort every rank of ``comm`` after its traceback is printed.

    Without it the dying rank waits in MPI_Finalize while the others wait in their next collective, forever.
    """
    if id(comm) in _hooked:
        return
    _hooked.add(id(comm))
    previous = sys.excepthook

    def abortAll(kind: type, value: BaseException, trace: Any) -> None:
        previous(kind, value, trace)
        _report_and_abort(comm, f"rank {comm.Get_rank()} of {comm.Get_size()} died of an uncaught "
                                f"{kind.__name__}")

    sys.excepthook = abortAll
