"""Training objectives, by the name `--objective` uses."""
from tfpref.objectives.base import Objective, ObjectiveOutput
from tfpref.objectives.classify import ClassifyObjective
from tfpref.objectives.conditional import ConditionalObjective
from tfpref.objectives.denoising import DenoisingObjective
from tfpref.objectives.dpo import DpoObjective
from tfpref.objectives.filtering import FilterObjective
from tfpref.objectives.mle import MleObjective
from tfpref.objectives.policy_gradient import PpoObjective, ReinforceObjective, RlooObjective
from tfpref.objectives.preference_vector import PreferenceVectorObjective
from tfpref.objectives.reward_model import RewardModelObjective
from tfpref.objectives.reward_weighted import AwrObjective, RwrObjective
from tfpref.objectives.sft import SftObjective
from tfpref.objectives.unlikelihood import UnlikelihoodObjective

OBJECTIVES = {cls.name: cls for cls in (
    MleObjective, DenoisingObjective, SftObjective, ClassifyObjective, FilterObjective, ConditionalObjective,
    UnlikelihoodObjective, RwrObjective, AwrObjective, PreferenceVectorObjective,
    RewardModelObjective, DpoObjective, ReinforceObjective, RlooObjective, PpoObjective)}


def build_objective(config):
    """The objective `config.train.objective` names, for the RunConfig `config`."""
    return OBJECTIVES[config.train.objective](config)


__all__ = ["Objective", "ObjectiveOutput", "OBJECTIVES", "build_objective"]
