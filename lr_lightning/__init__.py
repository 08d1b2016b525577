"""lr-lightning: PyTorch Lightning framework for low-resolution vision."""

__version__ = "0.1.0"
