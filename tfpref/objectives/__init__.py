"""Training objectives, by the name `--objective` uses."""
from tfpref.objectives.base import Objective, ObjectiveOutput
from tfpref.objectives.denoising import DenoisingObjective
from tfpref.objectives.mle import MleObjective

OBJECTIVES = {cls.name: cls for cls in (MleObjective, DenoisingObjective)}


def build_objective(train_config):
    return OBJECTIVES[train_config.objective](train_config)


__all__ = ["Objective", "ObjectiveOutput", "OBJECTIVES", "build_objective"]
