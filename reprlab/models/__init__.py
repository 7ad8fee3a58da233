"""Model architectures, registered by name (see :mod:`reprlab.models.registry`)."""

from reprlab.models.registry import MODELS, create_model, get_entry, list_models, register_model

__all__ = ["MODELS", "create_model", "get_entry", "list_models", "register_model"]
