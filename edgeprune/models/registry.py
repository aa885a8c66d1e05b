from edgeprune.registry import Registry

MODELS: Registry = Registry("model")
