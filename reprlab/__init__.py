"""reprlab: reproducible representation-learning experiments on CIFAR-100."""

__version__ = "0.1.0"
