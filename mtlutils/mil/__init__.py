"""Multiple-instance learning on bags of tile features: paper B's joint Transformer and its training loop."""

from mtlutils.mil.model import PAPER_B, BagTransformer, MILConfig, pad_bags
from mtlutils.mil.train import BagFit, MILTrainConfig, ScaledTarget, bag_tasks, fit_bags, predict_bags

__all__ = [
    "PAPER_B",
    "BagFit",
    "BagTransformer",
    "MILConfig",
    "MILTrainConfig",
    "ScaledTarget",
    "bag_tasks",
    "fit_bags",
    "pad_bags",
    "predict_bags",
]
