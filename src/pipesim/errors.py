"""Every error pipesim raises on purpose derives from :class:`PipesimError`.

```
PipesimError
 ├── ModelError          a model file or mapping is invalid; ``issues`` names each key path and problem
 ├── EngineError         the chosen engine cannot express the model (e.g. rep capacity on ``vectorized``)
 ├── QuestionError       a question got a bad argument (goal ≤ 0, confidence outside (0, 1), unreachable goal)
 └── MissingExtraError   an optional dependency (dask, matplotlib) is not installed
```
"""

from __future__ import annotations

from dataclasses import dataclass


class PipesimError(Exception):
    """Base class: catch this to handle any pipesim failure."""


@dataclass(frozen=True)
class Issue:
    """One problem in a model: where (``stages[2].conversion.alpha``) and what (``must be > 0, got -1``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ModelError(PipesimError):
    """The model is invalid. Fix each listed key; nothing was simulated."""

    def __init__(self, issues: list[Issue], source: str | None = None) -> None:
        self.issues = list(issues)
        self.source = source
        where = f"{source}: " if source else ""
        lines = "\n".join(f"  {issue}" for issue in self.issues)
        super().__init__(f"{where}invalid model ({len(self.issues)} problem(s)):\n{lines}")


class EngineError(PipesimError):
    """The engine cannot express this model; the message names an engine that can."""


class QuestionError(PipesimError):
    """A question was asked with an argument it cannot answer; the message names the argument."""


class MissingExtraError(PipesimError):
    """An optional feature needs a package that is not installed; the message names the extra."""

    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(f"{feature} needs the '{extra}' extra: pip install 'pipegraph[{extra}]'")
