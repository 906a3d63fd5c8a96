"""Task specifications: a task's name, kind and number of classes, and which task is the main one."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

TASK_KINDS = ("binary", "regression", "adversarial-class")


@dataclass(frozen=True)
class TaskSpec:
    """One task: its ``name`` (the key of its target), ``kind`` (see :data:`TASK_KINDS`) and, for class
    tasks, ``n_classes`` (filled in from the training targets by :func:`mtlutils.training.fit`)."""

    name: str
    kind: str
    n_classes: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task {self.name!r}: kind {self.kind!r} is not one of {TASK_KINDS}")
        if not self.name.isidentifier():
            raise ValueError(f"task name {self.name!r} must be a Python identifier (letters, digits, _)")
        if self.kind == "adversarial-class" and self.n_classes is not None and self.n_classes < 2:
            raise ValueError(f"task {self.name!r}: an adversarial class task needs n_classes >= 2")

    @property
    def is_adversarial(self) -> bool:
        return self.kind == "adversarial-class"

    @property
    def out_features(self) -> int:
        if self.kind == "adversarial-class":
            if self.n_classes is None:
                raise ValueError(f"task {self.name!r}: n_classes unknown; pass TaskSpec(..., n_classes=K)")
            return self.n_classes
        return 1


def parse_tasks(tasks: Mapping[str, str | TaskSpec] | Iterable[TaskSpec]) -> dict[str, TaskSpec]:
    """Normalise ``{"tumour": "binary", "count": "regression", ...}`` (or TaskSpecs) to a dict of
    :class:`TaskSpec` **sorted by name** (the order the user listed them in never matters)."""
    if isinstance(tasks, Mapping):
        specs = []
        for name, value in tasks.items():
            if isinstance(value, TaskSpec):
                if value.name != name:
                    raise ValueError(f"task key {name!r} differs from its TaskSpec name {value.name!r}")
                specs.append(value)
            else:
                specs.append(TaskSpec(name=name, kind=str(value)))
    else:
        specs = list(tasks)
    if not specs:
        raise ValueError("no tasks given; pass e.g. {'tumour': 'binary'}")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate task names in {names}")
    return {s.name: s for s in sorted(specs, key=lambda s: s.name)}


def main_task_name(tasks: Mapping[str, TaskSpec], main_task: str | None = None) -> str:
    """The task used for early stopping and AUC: ``main_task`` or the only ``"binary"`` task."""
    if main_task is not None:
        if main_task not in tasks:
            raise ValueError(f"main_task={main_task!r} is not among the tasks {list(tasks)}")
        return main_task
    binary = [n for n, s in tasks.items() if s.kind == "binary"]
    if len(binary) != 1:
        raise ValueError(f"cannot tell the main task among {list(tasks)}; pass main_task='name'")
    return binary[0]
