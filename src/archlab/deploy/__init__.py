"""Deployment: a trained run to a checked ONNX or TorchScript file (a seq2seq run to an ONNX
encoder and decoder step, with a greedy decode in ONNX Runtime), int8 quantization with ONNX
Runtime, and latency benchmarks of models, files and runs.

Example:
    >>> from archlab.deploy import benchmark
    >>> [row["batch_size"] for row in benchmark(lambda x: x, (3,), (1, 4), repeats=3, min_repeats=1)]
    [1, 4]
"""

from ._bench import BenchResult, bench_path, benchmark, timed_calls
from ._export import (
    ExportError,
    ExportResult,
    ModelFileError,
    Runner,
    check_export_options,
    export_model,
    export_run,
    file_size,
    load_run_model,
    load_runner,
    read_metadata,
    supported_opsets,
)
from ._quantize import QuantizeResult, check_quantizable, quantize_onnx
from ._seq2seq import Seq2SeqExportResult, export_seq2seq, export_seq2seq_run, onnx_beam_search, onnx_greedy_decode

__all__ = ["BenchResult", "ExportError", "ExportResult", "ModelFileError", "QuantizeResult", "Runner",
           "Seq2SeqExportResult", "bench_path", "benchmark", "check_export_options", "check_quantizable",
           "export_model", "export_run", "export_seq2seq", "export_seq2seq_run", "file_size", "load_run_model",
           "load_runner", "onnx_beam_search", "onnx_greedy_decode", "quantize_onnx", "read_metadata",
           "supported_opsets", "timed_calls"]
