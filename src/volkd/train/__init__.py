"""volkd.train: one training loop for the 3D teacher and the 2D students, checkpoints, resume, DDP."""

from volkd.train.api import TrainResult, predict_proba, train_student, train_teacher
from volkd.train.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from volkd.train.config import AugmentConfig, TrainConfig

__all__ = [
    "AugmentConfig", "Checkpoint", "CheckpointError", "TrainConfig", "TrainResult",
    "load_checkpoint", "predict_proba", "save_checkpoint", "train_student", "train_teacher",
]
