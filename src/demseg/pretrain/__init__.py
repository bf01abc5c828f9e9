"""MAE pre-training on unlabelled DEMs (``demseg pretrain``)."""

from demseg.pretrain.mae import PretrainConfig, pretrain

__all__ = ["PretrainConfig", "pretrain"]
