"""The shared training engine."""

from prefopt.engine.config import TrainConfig
from prefopt.engine.module import Module, split_batch
from prefopt.engine.trainer import Trainer, write_summary

__all__ = ["Module", "TrainConfig", "Trainer", "split_batch", "write_summary"]
