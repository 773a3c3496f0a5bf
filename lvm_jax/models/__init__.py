"""The Flax model family: Mamba, local-attention and GRU blocks, five variants."""

from lvm_jax.models.model import LatentVectorModel, count_parameters, l2_normalize, weight_decay_mask
from lvm_jax.models.predictor import (LatentVectorPredictor, model_from_config, model_sizes,
                                      predictor_from_config)
from lvm_jax.models.projection import ProjectionHead, create_head
from lvm_jax.models.variants import ALIASES, VARIANTS, create_model, model_names, resolve_sizes

__all__ = ["ALIASES", "VARIANTS", "LatentVectorModel", "LatentVectorPredictor", "count_parameters",
           "create_head", "create_model", "l2_normalize", "model_from_config", "model_names", "model_sizes",
           "predictor_from_config", "ProjectionHead",
           "resolve_sizes", "weight_decay_mask"]
