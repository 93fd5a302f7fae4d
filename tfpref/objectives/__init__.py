"""Training objectives, by the name `--objective` uses."""
from tfpref.objectives.base import Objective, ObjectiveOutput
from tfpref.objectives.classify import ClassifyObjective
from tfpref.objectives.denoising import DenoisingObjective
from tfpref.objectives.mle import MleObjective

OBJECTIVES = {cls.name: cls for cls in (MleObjective, DenoisingObjective, ClassifyObjective)}


def build_objective(config):
    """The objective `config.train.objective` names, for the RunConfig `config`."""
    return OBJECTIVES[config.train.objective](config)


__all__ = ["Objective", "ObjectiveOutput", "OBJECTIVES", "build_objective"]
