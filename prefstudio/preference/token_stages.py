"""The two-stage schedule of 000 §4.1, shared by both preference-token backbones."""
from torch import nn

from prefstudio.errors import InvalidInput


def train_only_stage(module: nn.Module, stage: int, stage1_parameters: list[nn.Parameter],
                     preference_tokens: nn.Parameter | None) -> list[nn.Parameter]:
    """Stage 1 trains `stage1_parameters` and P_v if the model has them yet, stage 2 only P_v;
    every other parameter of `module` is frozen."""
    if stage == 1:
        params = list(stage1_parameters)
        if preference_tokens is not None and all(p is not preference_tokens for p in params):
            params.append(preference_tokens)
    elif stage == 2:
        if preference_tokens is None:
            raise InvalidInput("stage 2 needs preference tokens: call add_preference_tokens first")
        params = [preference_tokens]
    else:
        raise InvalidInput(f"stage must be 1 or 2, got {stage}")
    trainable = {id(p) for p in params}
    for p in module.parameters():
        p.requires_grad_(id(p) in trainable)
    return params
