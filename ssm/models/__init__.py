"""Models assembled from encoders, residual SSM backbones and heads."""

from ssm.models.classifier import SequenceClassifier
from ssm.models.encoders import LinearEncoder, TokenEncoder
from ssm.models.forecaster import MultivariateForecaster, PaddedForecaster
from ssm.models.image import ImageClassifier
from ssm.models.pooling import pool
from ssm.models.retrieval import RetrievalClassifier
from ssm.models.spacetime import SpaceTime, SpaceTimeBlock

__all__ = [
    "ImageClassifier", "LinearEncoder", "MultivariateForecaster", "PaddedForecaster", "RetrievalClassifier",
    "SequenceClassifier", "SpaceTime", "SpaceTimeBlock", "TokenEncoder", "pool",
]
