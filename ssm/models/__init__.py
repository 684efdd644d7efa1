"""Models assembled from encoders, residual SSM backbones and heads."""

from ssm.models.classifier import SequenceClassifier
from ssm.models.encoders import LinearEncoder, TokenEncoder
from ssm.models.forecaster import MultivariateForecaster
from ssm.models.image import ImageClassifier
from ssm.models.pooling import pool
from ssm.models.retrieval import RetrievalClassifier

__all__ = ["ImageClassifier", "LinearEncoder", "MultivariateForecaster", "RetrievalClassifier", "SequenceClassifier", "TokenEncoder", "pool"]
