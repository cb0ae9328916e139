"""Plain stochastic gradient descent, for comparison with RMSProp."""
from __future__ import annotations

from typing import Any

from puzzle_rms.backends.backend import hyper_vector
from puzzle_rms.optimizers.buckets import Bucket
from puzzle_rms.optimizers.optimizer import Optimizer


class SGD(Optimizer):
    """``w = w * (1 - lr * decoupledWeightDecay) - lr * g`` through the same fused, segmented kernels.

    Takes every argument of :class:`Optimizer` (schedules, groups, loss scale, norm clipping, non-finite check).
    :class:`~puzzle_rms.optimizers.MomentumSGD` and :class:`~puzzle_rms.optimizers.NesterovSGD` run the same
    kernel with a momentum buffer.
    """

    HYPERPARAMETERS = Optimizer.HYPERPARAMETERS  # SGD adds none of its own
    ATTRS = ("learnRate",)
    momRate = 0.0
    nesterov = False

    def stateInit(self) -> dict[str, float]:
        return {"mom": 0.0} if self.momRate > 0 else {}

    def step(self, bucket: Bucket, segParams: Any, gradScale: float) -> None:
        weights = bucket.state["master"] if "master" in bucket.state else bucket.weights()
        self.backend.sgd_update(weights, bucket.grads(), bucket.state.get("mom"), bucket.kernelLayout, segParams,
                                hyper_vector(gradScale=gradScale, mu=self.momRate,
                                             nesterov=1.0 if self.nesterov else 0.0))
