"""Plan a large-model run before renting the GPUs: training FLOPs, time and memory per GPU under a
parallel layout (ZeRO, tensor, pipeline and sequence parallelism, recomputation), a verdict and the
smallest changes that fit; serving costs (KV cache, memory, decode and prefill bounds); the
compute-optimal size for a FLOP budget. Pure arithmetic on a spec's shapes, no torch; formulas and
sources in docs/plan.md.

Example:
    >>> from archlab.plan import PlanConfig, plan_training
    >>> plan = plan_training("examples/gpt2-small.yaml", PlanConfig(tokens=1e9, gpus=1, gpu="a10"))
    >>> plan.fits, plan.memory["weights"]
    (True, 248879616)
"""

from ._errors import PlanError
from ._hardware import GPUS, Hardware, get_gpu
from ._inference import (
    KV_BYTES,
    WEIGHT_BITS,
    DecodeBound,
    InferencePlan,
    PrefillBound,
    Serving,
    ServingMemory,
    decode_bound,
    kv_cache_bytes,
    kv_cache_bytes_per_token,
    kv_heads_per_gpu,
    plan_inference,
    prefill_bound,
    serving_memory,
)
from ._memory import (
    OPTIMIZERS,
    ActivationParts,
    block_activation_bytes,
    block_activation_parts,
    model_state_bytes,
    output_activation_bytes,
)
from ._scaling import (
    LAWS,
    METHODS,
    ComputeOptimal,
    LossLaw,
    budget_for,
    compute_optimal,
    scale_spec,
    smallest_budget,
)
from ._shape import BlockGroup, ModelShape, model_shape
from ._training import Change, Plan, PlanConfig, plan_training

__all__ = ["GPUS", "KV_BYTES", "LAWS", "METHODS", "OPTIMIZERS", "WEIGHT_BITS", "ActivationParts", "BlockGroup",
           "Change", "ComputeOptimal", "DecodeBound", "Hardware", "InferencePlan", "LossLaw", "ModelShape", "Plan",
           "PlanConfig", "PlanError", "PrefillBound", "Serving", "ServingMemory", "block_activation_bytes",
           "block_activation_parts", "budget_for", "compute_optimal", "decode_bound", "get_gpu", "kv_cache_bytes",
           "kv_cache_bytes_per_token", "kv_heads_per_gpu", "model_shape", "model_state_bytes",
           "output_activation_bytes", "plan_inference", "plan_training", "prefill_bound", "scale_spec",
           "serving_memory", "smallest_budget"]
