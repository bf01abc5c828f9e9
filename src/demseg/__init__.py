"""demseg: few-label segmentation of LiDAR elevation models into buildings and roads."""

from demseg.errors import DemsegError

__version__ = "0.1.0"
__all__ = ["DemsegError", "__version__"]
