"""LightningModules and their helpers: the AMR classifier, SKD, the SNR regressor, callbacks, evaluation, and the
LightningCLI factory behind ``rfml fit|validate|test|predict``."""

from rfml.trainers.augment import SignalAugment
from rfml.trainers.callbacks import EpochTimer, PredictionWriter, SavePredictions
from rfml.trainers.classifier import AMREvaluation, Classifier
from rfml.trainers.skd import SKD, skd_loss
from rfml.trainers.snr_regressor import SNRRegressor

__all__ = [
    "SKD",
    "AMREvaluation",
    "Classifier",
    "EpochTimer",
    "PredictionWriter",
    "SNRRegressor",
    "SavePredictions",
    "SignalAugment",
    "skd_loss",
]
