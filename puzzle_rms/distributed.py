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
launcher and a hostfile (``mpiexec -f hostfile -n 4 python train.py`` for MPICH,
``mpiexec --hostfile hostfile -n 4 ...`` for Open MPI).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from puzzle_rms import backends

_INSTALL_HINT = "pip install mpi4py mpich (from a puzzle_rms clone: pip install -e '.[mpi]')"


def _mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(f"puzzle_rms.distributed needs mpi4py and an MPI library: {_INSTALL_HINT}") from error
    return MPI


class _MpiHost:
    """Collectives on host (NumPy) buffers over an MPI communicator."""

    def __init__(self, MPI: Any, comm: Any) -> None:
        self.MPI, self.comm, self.size = MPI, comm, comm.Get_size()
        self.scratch: dict[int, np.ndarray] = {}

    def broadcast(self, flat: np.ndarray) -> None:
        self.comm.Bcast([flat.view(np.uint8), self.MPI.BYTE], root=0)

    def allreduceMean(self, flat: np.ndarray) -> None:
        if flat.dtype == np.float16:
            scratch = self.scratch.get(flat.size)
            if scratch is None:
                scratch = self.scratch[flat.size] = np.empty(flat.size, np.float32)
            np.copyto(scratch, flat)
            self._sumMean(scratch)
            np.copyto(flat, scratch, casting="same_kind")
        else:
            self._sumMean(flat)

    def _sumMean(self, flat: np.ndarray) -> None:
        self.comm.Allreduce(self.MPI.IN_PLACE, flat, op=self.MPI.SUM)
        flat /= self.size


class _HostCopy:
    """Device buffers through host memory: copy out, reduce over MPI, copy back."""

    def __init__(self, host: _MpiHost) -> None:
        self.host = host

    def broadcast(self, flat: Any) -> None:
        self._roundTrip(flat, self.host.broadcast)

    def allreduceMean(self, flat: Any) -> None:
        self._roundTrip(flat, self.host.allreduceMean)

    @staticmethod
    def _roundTrip(flat: Any, collective: Any) -> None:
        backend = backends.current()
        hostCopy = backend.to_host(flat)  # a copy, since the buffer lives on a device
        collective(hostCopy)
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

    def broadcast(self, flat: Any) -> None:
        self.comm.bcast(flat.data.ptr, flat.nbytes, self.nccl.NCCL_UINT8, 0, self.cupy.cuda.get_current_stream().ptr)

    def allreduceMean(self, flat: Any) -> None:
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
    the optimizer does with it.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm, optional
        The processes that train together; ``MPI.COMM_WORLD`` by default.
    nccl : bool, optional
        Transport for CuPy buffers: None (default) uses NCCL when CuPy has it and
        MPI with a host copy otherwise; True requires NCCL; False always copies
        through the host. Host buffers always go over MPI.

    Attributes
    ----------
    rank, size : int
        This process's index and the number of processes.
    localRank, localSize : int
        The same on this machine only (pick the GPU with :meth:`useLocalDevice`).
    """

    def __init__(self, comm: Any = None, nccl: Optional[bool] = None) -> None:
        MPI = _mpi()
        comm = MPI.COMM_WORLD if comm is None else comm
        if not isinstance(comm, MPI.Intracomm):
            raise TypeError(f"NodeInfo: comm must be an mpi4py intracommunicator (e.g. MPI.COMM_WORLD), "
                            f"got {type(comm).__name__}")
        if nccl is not None and not isinstance(nccl, bool):
            raise TypeError(f"NodeInfo: nccl must be None, True or False, got {nccl!r} ({type(nccl).__name__})")
        if nccl and not _ncclAvailable():
            raise RuntimeError("NodeInfo: nccl=True but CuPy with NCCL is not importable here; pass nccl=None to "
                               "fall back to MPI through host memory")
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.localRank, self.localSize = local.Get_rank(), local.Get_size()
        local.Free()
        self._nccl = nccl
        self._host = _MpiHost(MPI, comm)
        self._device: Any = None
        self._backendsAgree = False

    def __repr__(self) -> str:
        return f"NodeInfo(rank={self.rank}, size={self.size}, localRank={self.localRank})"

    @property
    def isRoot(self) -> bool:
        """Whether this is rank 0: the rank that writes checkpoints, logs and plots."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank gets here (e.g. before the other ranks read a checkpoint rank 0 wrote)."""
        self.comm.Barrier()

    # --- the collectives the optimizer calls ----------------------------------------------------
    def broadcast(self, flatArray: Any) -> None:
        """Overwrite ``flatArray`` on every rank with rank 0's values, in place (any dtype, C-contiguous)."""
        flat = self._flat("broadcast", flatArray, floating=False)
        if self.size > 1:
            self._checkBackends()
            self._transport(flat).broadcast(flat)

    def allreduceMean(self, flatArray: Any) -> None:
        """Replace ``flatArray`` by its mean over all ranks, in place: ``a <- (1/size) * sum_r a_r``.

        ``flatArray`` must be a C-contiguous float16/32/64 array of the same shape on every rank;
        float16 is summed in float32 (see the module docstring).
        """
        flat = self._flat("allreduceMean", flatArray, floating=True)
        if self.size > 1:
            self._checkBackends()
            self._transport(flat).allreduceMean(flat)

    def meanValue(self, value: float) -> float:
        """The mean of a Python number over all ranks (e.g. to report the loss of the whole batch)."""
        buffer = np.array([value], dtype=np.float64)
        self._host.allreduceMean(buffer)
        return float(buffer[0])

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
        names = self.comm.allgather(backends.current().name)
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

    def _transport(self, flat: Any) -> Any:
        if isinstance(flat, np.ndarray):
            return self._host
        if self._device is None:
            useNccl = _ncclAvailable() if self._nccl is None else self._nccl
            self._device = _Nccl(self.comm, self.rank, self.size) if useNccl else _HostCopy(self._host)
        return self._device
