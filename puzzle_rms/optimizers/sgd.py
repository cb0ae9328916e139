"""Plain stochastic gradient descent, for comparison with RMSProp."""
from __future__ import annotations

from typing import Any

from puzzle_rms.backends.backend import hyper_vector
from puzzle_rms.optimizers.buckets import Bucket
from puzzle_rms.optimizers.optimizer import Optimizer


class SGD(Optimizer):
    """``w = w * (1 - lr * decoupledWeightDecay) - lr * g`` through the same fused, segmented kernels.

    Takes every argument of :class:`Optimizer` (schedules, groups, loss scale, norm clipping, non-finite check).
    """

    def step(self, bucket: Bucket, segParams: Any, gradScale: float) -> None:
        weights = bucket.state["master"] if "master" in bucket.state else bucket.weights()
        self.backend.sgd_update(weights, bucket.grads(), bucket.kernelLayout, segParams,
                                hyper_vector(gradScale=gradScale))
