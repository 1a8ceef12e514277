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

__all__ = ["KV_BYTES", "WEIGHT_BITS", "DecodeBound", "InferencePlan", "PrefillBound", "Serving", "ServingMemory",
           "decode_bound", "kv_cache_bytes", "kv_cache_bytes_per_token", "kv_heads_per_gpu", "plan_inference",
           "prefill_bound", "serving_memory"]
