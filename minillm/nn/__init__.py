"""The GPT model: layers as forward/backward pairs (`functional`) and the model (`gpt`)."""

from .gpt import GPT, KVCache, backward, forward, forward_train, init_params, param_shapes

__all__ = ["GPT", "KVCache", "backward", "forward", "forward_train", "init_params", "param_shapes"]
