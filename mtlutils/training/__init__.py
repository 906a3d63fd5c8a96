"""Training the guided CNN on in-memory patches: masked multi-task losses, a balancer, early stopping.

Entry point::

    result = fit(images, {"tumour": y, "count": c, "center": k},
                 {"tumour": "binary", "count": "regression", "center": "adversarial-class"},
                 split,                                    # "train" / "val" / anything else (ignored)
                 model_config=ModelConfig(), config=TrainConfig(weighting="uncert"))
    result.history          # one row per epoch: losses, task weights, val AUC / R^2 / accuracy, lambda
    predict(result.model, test_images)["tumour"]            # probabilities

Design choices (all visible in :class:`TrainConfig`):
    * data stay in memory as uint8 tensors (N, 3, H, W), resized once by :func:`prepare_images`;
      batches are index slices (no Dataset/DataLoader), augmented with random flips/transposes;
    * the main binary task uses class-weighted BCE with "balanced" weights n / (2 n_c) from the
      *training* labels (same ratio as paper A's, mean weight 1 over the training set);
    * a missing target (NaN; class -1) is masked: its row contributes no loss and no gradient, and a task
      with no target in a batch is left out of that batch's loss dict (never multiplied by 0, never filled);
    * adversarial class tasks sit behind a gradient reversal layer whose strength follows
      ``config.reversal`` (constant, DANN ramp or two-phase);
    * early stopping on a validation loss (``monitor="main"``: the main task's unweighted loss, comparable
      across epochs, weightings and model IDs; ``"total"``: paper A's sum of weighted losses), best
      checkpoint (model and balancer) restored; with a two-phase schedule only epochs after the switch
      can be "best";
    * transductive auxiliary/adversarial losses on unlabeled patches (paper A's variant) only with
      ``transductive=True``: rows of the splits in ``unlabeled_splits`` join the training batches with
      their main-task label masked (their centers then become classes of the adversary too).

Many trainings (a results table: model IDs x weightings x seeds): :func:`fit_many` runs named
:class:`Job` s in worker processes (:func:`mtlutils.core.parallel.parallel_map`). Threads: on a 2-core
CPU one training with 2 threads takes ~0.8 s per epoch of 2400 64-px patches, two 1-thread workers
together do ~1.4x the work of that, and a 2-thread process slows ~10x as soon as anything else uses a
core; so prefer 1-thread workers.

Modules: :mod:`~mtlutils.training.config` (TrainConfig, FitResult), :mod:`~mtlutils.training.inputs`
(images), :mod:`~mtlutils.training.losses`, :mod:`~mtlutils.training.optimizer`,
:mod:`~mtlutils.training.data` (encoded inputs of one training), :mod:`~mtlutils.training.evaluate`
(validation), :mod:`~mtlutils.training.loop` (fit), :mod:`~mtlutils.training.predict`,
:mod:`~mtlutils.training.checkpoint` (save_run, load_run), :mod:`~mtlutils.training.jobs` (fit_many).
"""

from __future__ import annotations

from mtlutils.training.checkpoint import load_run, save_run
from mtlutils.training.config import FitResult, TrainConfig
from mtlutils.training.inputs import augment_batch, prepare_images
from mtlutils.training.jobs import Job, fit_many
from mtlutils.training.loop import fit
from mtlutils.training.losses import class_weights, encode_targets, task_losses
from mtlutils.training.optimizer import make_optimizer
from mtlutils.training.predict import embed, predict

__all__ = [
    "FitResult",
    "Job",
    "TrainConfig",
    "augment_batch",
    "class_weights",
    "embed",
    "encode_targets",
    "fit",
    "fit_many",
    "load_run",
    "make_optimizer",
    "predict",
    "prepare_images",
    "save_run",
    "task_losses",
]
