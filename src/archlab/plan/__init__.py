"""The planner of large-model runs: serving costs and compute-optimal sizing (issue 13)."""

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

__all__ = ["KV_BYTES", "LAWS", "METHODS", "WEIGHT_BITS", "ComputeOptimal", "DecodeBound", "InferencePlan", "LossLaw",
           "PrefillBound", "Serving", "ServingMemory", "budget_for", "compute_optimal", "decode_bound",
           "kv_cache_bytes", "kv_cache_bytes_per_token", "kv_heads_per_gpu", "plan_inference", "prefill_bound",
           "scale_spec", "serving_memory", "smallest_budget"]
