"""A training on disk: ``history.csv``, ``model.pt`` and ``run.json`` written atomically, and read back."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import torch

from mtlutils.core.io import atomic_path, atomic_write_text
from mtlutils.models import AdversaryConfig, GuidedNet, ModelConfig, TaskSpec
from mtlutils.training.config import FitResult


def write_history(folder: Path, history: pd.DataFrame) -> None:
    """Write the per-epoch log ``folder/history.csv`` atomically."""
    with atomic_path(folder / "history.csv") as tmp:
        history.to_csv(tmp, index=False)


def save_run(result: FitResult, folder: str | Path) -> Path:
    """Write ``history.csv``, ``model.pt`` (state dict, configs, tasks, classes) and ``run.json`` atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_history(folder, result.history)
    payload = {
        "model_state": result.model.state_dict(),
        "balancer_state": result.balancer.state_dict(),
        "model_config": asdict(result.model.config),
        "tasks": {name: asdict(spec) for name, spec in result.model.tasks.items()},
        "classes": result.classes,
    }
    with atomic_path(folder / "model.pt") as tmp:
        torch.save(payload, tmp)
    info = {
        "best_epoch": result.best_epoch,
        "main_task": result.main_task,
        "class_weights": result.class_weights,
        "classes": {k: [str(c) for c in v] for k, v in result.classes.items()},
        "seconds": round(result.seconds, 3),
        "balancer": result.balancer.name,
        "train_config": {
            k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v)
            for k, v in vars(result.config).items()
        },
        "model_config": asdict(result.model.config),
    }
    atomic_write_text(folder / "run.json", json.dumps(info, indent=1, default=str) + "\n")
    return folder


def load_run(folder: str | Path, device: str = "cpu") -> tuple[GuidedNet, dict]:
    """Rebuild the model saved by :func:`save_run`; returns (model in eval mode, saved payload)."""
    path = Path(folder) / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; pass the folder given to fit(run_dir=...) or save_run()")
    payload = torch.load(path, map_location=device, weights_only=True)
    cfg = payload["model_config"]
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
    if isinstance(cfg.get("adversary"), dict):
        cfg["adversary"] = AdversaryConfig(**cfg["adversary"])
    cfg = ModelConfig(**cfg)
    cfg = replace(cfg, pretrained=None)  # the saved state dict already holds every weight
    specs = {name: TaskSpec(**spec) for name, spec in payload["tasks"].items()}
    model = GuidedNet(specs, cfg)
    model.load_state_dict(payload["model_state"])
    return model.to(device).eval(), payload
