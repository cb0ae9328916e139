"""Data sharding for data-parallel training: each rank takes its equal slice of every batch."""
from __future__ import annotations

from typing import Any


def shardBatch(batch: Any, nodeinfo: Any = None) -> Any:
    """Rows ``[rank * n / size, (rank + 1) * n / size)`` of ``batch`` (a view), for this process's rank.

    With ``size`` ranks each taking ``n / size`` rows and a cost that averages over
    its rows (MSE, CrossEntropy), the mean over ranks of the shard gradients, which
    :meth:`puzzle_rms.distributed.NodeInfo.allreduceMean` computes, equals the
    gradient of the whole batch. That only holds for equal shards, so ``n`` must be
    a multiple of ``size`` (drop or pad the last batch otherwise).

    Parameters
    ----------
    batch : array
        Any array of any backend whose first axis is the batch (``batch.shape[0] == n``).
    nodeinfo : NodeInfo, optional
        Anything with integer ``rank`` and ``size`` attributes; None (single process) returns ``batch``.

    Raises
    ------
    ValueError
        ``n`` is not a multiple of ``size``, or the rank is outside ``[0, size)``.
    """
    if nodeinfo is None:
        return batch
    rank, size = nodeinfo.rank, nodeinfo.size
    if not 0 <= rank < size:
        raise ValueError(f"shardBatch: nodeinfo has rank {rank} and size {size}; expected 0 <= rank < size")
    shape = getattr(batch, "shape", None)
    if not shape:
        raise TypeError(f"shardBatch: batch must be an array with a batch axis, got {type(batch).__name__}"
                        f"{'' if shape is None else ' of shape ()'}")
    rows = shape[0]
    if rows % size:
        raise ValueError(f"shardBatch: a batch of {rows} rows does not split into {size} equal shards; expected a "
                         f"multiple of {size} (unequal shards would weight the ranks' mean gradients unequally)")
    step = rows // size
    return batch[rank * step:(rank + 1) * step]
