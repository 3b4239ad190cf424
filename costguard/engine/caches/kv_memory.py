"""How many KV cache blocks vLLM allocates per instance, derived from GPU memory and the model's
shape the way vLLM's memory profiling does (`caches.prefix` pools declared with `derive:`)."""

from __future__ import annotations

_GIB = 1 << 30


def derive_num_gpu_blocks(
    *,
    gpu_memory_gb: float,
    gpu_memory_utilization: float,
    weights_gb: float,
    num_layers: int,
    num_kv_heads: int,
    head_dim: int,
    kv_dtype_bytes: int = 2,
    block_size: int = 16,
    tensor_parallel_size: int = 1,
    overhead_gb: float = 2.0,
    max_model_len: int | None = None,
) -> int:
    """Estimate the ``num_gpu_blocks`` vLLM would allocate per instance (per TP rank).

    vLLM (``vllm/v1/worker/gpu_worker.py`` ``determine_available_memory``) computes
    ``available = total_memory * gpu_memory_utilization - non_kv_cache_memory`` where
    ``non_kv_cache_memory`` = weights + the activation peak of a profiling forward pass at
    ``max_num_batched_tokens`` + non-torch memory (NCCL, cuBLAS workspaces), and newer versions
    may also subtract a CUDA-graph pool estimate.  Then ``vllm/v1/core/kv_cache_utils.py``
    ``get_num_blocks`` takes ``available // page_size // num_layers`` with
    ``page_size = 2 (K and V) * block_size * kv_heads_per_rank * head_dim * dtype_bytes``.

    Units are GiB (2**30 bytes) per GPU as CUDA reports them: an "80 GB" H100 is ~79.2 GiB.
    ``weights_gb`` is the whole checkpoint, split evenly over the tensor-parallel ranks.
    ``overhead_gb`` stands for the profiled activation peak + non-torch memory (+ graphs): 2 GiB
    is typical of 7-8B models at default batch sizes (vLLM logs ~1-1.5 GiB activation peak and
    ~0.1-0.5 GiB non-torch); take the real figure from the engine log when you have one.
    With ``max_model_len`` it also checks, like vLLM at start-up, that one full-length sequence
    fits.  Raises ValueError when the memory is insufficient.
    """
    for name, value in (
        ("num_layers", num_layers),
        ("num_kv_heads", num_kv_heads),
        ("head_dim", head_dim),
        ("kv_dtype_bytes", kv_dtype_bytes),
        ("block_size", block_size),
        ("tensor_parallel_size", tensor_parallel_size),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not 0 < gpu_memory_utilization <= 1:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    if gpu_memory_gb <= 0 or weights_gb < 0 or overhead_gb < 0:
        raise ValueError("gpu_memory_gb must be positive; weights_gb and overhead_gb non-negative")

    tp = tensor_parallel_size
    # vLLM shards KV heads over TP ranks and replicates them when there are fewer heads than ranks.
    if num_kv_heads >= tp:
        if num_kv_heads % tp:
            raise ValueError(
                f"num_kv_heads={num_kv_heads} is not divisible by tensor_parallel_size={tp}"
            )
    elif tp % num_kv_heads:
        raise ValueError(
            f"tensor_parallel_size={tp} is not a multiple of num_kv_heads={num_kv_heads}"
        )
    kv_heads_per_rank = max(1, num_kv_heads // tp)
    bytes_per_block = 2 * num_layers * kv_heads_per_rank * head_dim * kv_dtype_bytes * block_size

    requested = gpu_memory_gb * gpu_memory_utilization
    weights_per_rank = weights_gb / tp
    available = requested - weights_per_rank - overhead_gb
    if available <= 0:
        raise ValueError(
            f"no memory left for the KV cache: {gpu_memory_gb} GiB x {gpu_memory_utilization} = "
            f"{requested:.2f} GiB, minus weights {weights_per_rank:.2f} GiB per GPU and overhead "
            f"{overhead_gb:.2f} GiB leaves {available:.2f} GiB; raise gpu_memory_utilization, "
            "use more tensor-parallel ranks or a quantized model"
        )
    num_blocks = int(available * _GIB // bytes_per_block)
    if num_blocks < 2:  # one block is the reserved null block
        raise ValueError(
            f"{available:.3f} GiB holds {num_blocks} KV block(s) of {bytes_per_block} bytes; "
            "vLLM needs at least 2 (one is reserved)"
        )
    if max_model_len is not None:
        needed = -(-max_model_len // block_size)
        if needed > num_blocks - 1:
            raise ValueError(
                f"max_model_len={max_model_len} needs {needed} KV blocks but only "
                f"{num_blocks - 1} fit in {available:.2f} GiB; lower max_model_len or give the "
                "KV cache more memory"
            )
    return num_blocks
