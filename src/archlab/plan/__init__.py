"""Plan a large-model training run before renting the GPUs: FLOPs, time, memory per GPU under a
parallel layout (ZeRO, tensor, pipeline and sequence parallelism, recomputation), a verdict and the
smallest changes that fit. Pure arithmetic on a spec's shapes, no torch; formulas in docs/plan.md.

Example:
    >>> from archlab.plan import PlanConfig, plan_training
    >>> plan = plan_training("examples/gpt2-small.yaml", PlanConfig(tokens=1e9, gpus=1, gpu="a10"))
    >>> plan.fits, plan.memory["weights"]
    (True, 248879616)
"""

from ._hardware import GPUS, Hardware, get_gpu
from ._memory import (
    OPTIMIZERS,
    ActivationParts,
    block_activation_bytes,
    block_activation_parts,
    model_state_bytes,
    output_activation_bytes,
)
from ._shape import BlockGroup, ModelShape, model_shape
from ._training import Change, Plan, PlanConfig, plan_training

__all__ = ["GPUS", "OPTIMIZERS", "ActivationParts", "BlockGroup", "Change", "Hardware", "ModelShape", "Plan",
           "PlanConfig", "block_activation_bytes", "block_activation_parts", "get_gpu", "model_shape",
           "model_state_bytes", "output_activation_bytes", "plan_training"]
