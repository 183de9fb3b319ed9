"""Peak memory of one LoRA/QLoRA training step, from sizes alone.

The model follows what this project's stack really allocates (torch 2.13, transformers 5, peft
0.21, bitsandbytes 0.50, HF Trainer), term by term:

Weights (``base_weights``)
  * NF4 (``4bit``): 0.5 byte per linear weight, plus one absmax per 64-weight block: fp32
    (4 B/64 = 0.0625 B/param) or, with double quantisation, 8-bit per block plus an fp32 absmax per
    256 blocks and a 256-entry code (0.0159 B/param). int8 (``8bit``, LLM.int8): 1 byte per weight
    plus an fp32 scale per output row.
  * Everything bitsandbytes does not quantise — embeddings, lm_head (kept unquantised by
    transformers), norms, biases — is cast to fp32 by ``peft.prepare_model_for_kbit_training``,
    which this app calls for quantised models.
  * ``none``: the compute dtype on a GPU (2 bytes for bf16/fp16); fp32 on the CPU (see
    ``models.load_model``).
Trainable state
  * ``lora_weights``: LoRA A/B and DoRA magnitudes in fp32 (peft upcasts adapters to fp32);
    ``modules_to_save``: full copies in their module's dtype; ``gradients``: one per trainable
    value in its dtype; ``optimizer_states``: AdamW 2 x fp32 (8 B/param), bitsandbytes 8-bit AdamW
    2 B/param plus block absmax (tensors under 4096 values stay 32-bit). Paged optimisers live in
    unified memory that spills to CPU RAM, so their states count in ``peak_bytes`` but not against
    the fit (``pageable_bytes``).
DDP (``ddp_buckets``, more than one process): the reducer's flat gradient buckets, one more copy
  of the trainable gradients per process.
Activations (``activations``), per decoder layer and token, as autograd saves them
  * every RMSNorm saves its input in fp32 (4h) and 1/rms;
  * attention (SDPA/flash) saves q, k, v, output and a log-sum-exp; GQA stays native without a
    padding mask, otherwise k/v are repeated to all heads; with padding (batch > 1) a float mask
    of seq^2 is saved per layer; ``eager`` attention saves the fp32 softmax and the probabilities
    (heads x seq per token);
  * the gated MLP saves gate, act(gate) and up (3 x intermediate);
  * each adapted layer saves its dropout mask (bool on CUDA, the input's dtype on the CPU), the
    adapter input copy in the autocast dtype, and A's output (r);
  * bitsandbytes returns outputs in the input's dtype, so a QLoRA model (fp32 norms and residual
    after k-bit preparation) keeps q/k/v and the MLP in fp32.
  With gradient checkpointing (non-reentrant, per layer) only each layer's input is kept and one
  layer is recomputed at a time.
  The plan's speed-ups change what is kept: the fused LoRA step (``fused_lora``) keeps its
  (dropped-out) input and keep-bits in the base layer's output dtype; the fused CPU kernels
  (``cpu_kernels``, Llama-style models) keep a norm's input as it came plus 1/rms, gate and
  up for SwiGLU, and only the probabilities for the attention softmax.
  These per-layer terms are checked against the tensors autograd really saves on the CPU (tests).
Logits and loss (``logits``): transformers upcasts the logits to fp32 for the loss; the backward
  of log-softmax holds its fp32 output, the incoming gradient and its own gradient together:
  12 bytes x vocabulary x tokens (Gemma-2's logit soft-capping adds two 16-bit copies). The
  fused CPU loss holds the logits and their gradient in the head's dtype during its forward
  only, before any backward workspace exists, and keeps the hidden states' gradient.
Autocast copies (``autocast_weight_copies``): a frozen fp32 weight used under bf16 autocast is cast
  for each use and the copy is saved for the backward pass — all linear weights on the CPU path
  (fp32 base), the fp32 lm_head of a QLoRA model, and the adapters everywhere.
Workspace (``workspace``): gradients flowing through one layer (about 3 x intermediate + 8 x hidden
  per token in the activation dtype), the dequantised weight of the largest quantised layer, and
  the optimizer step's temporaries when that is the peak.
Device overheads: ``cuda_context`` 512 MiB on a GPU (CUDA context, cuBLAS/cuDNN and bitsandbytes
  kernels: nvidia-smi counts it, torch.cuda.max_memory_allocated does not); ``allocator_overhead``
  10 % of the transient memory for the caching allocator's fragmentation and rounding (5 % on the
  CPU); ``runtime`` 640 MiB on the CPU for Python, torch, transformers, tokenizer and data
  (measured: 476 MiB resident after the imports alone).

The peak is the larger of (a) the start of the backward pass — all activations, the loss tensors
and the workspace on top of weights, trainable state and optimizer states — and (b) the optimizer
step. GPU figures could not be measured while this was written (no GPU was available): they rest
on the derivation above and on the published figures in tests/data/published_memory.yaml.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .arch import Arch
from .params import ParamCount

MIB = 2 ** 20
CUDA_CONTEXT_BYTES = 512 * MIB
CPU_RUNTIME_BYTES = 640 * MIB
GPU_FRAGMENTATION = 0.10
CPU_FRAGMENTATION = 0.05
NF4_BLOCK = 64
NF4_DQ_BLOCK = 256
OPTIM_8BIT_BLOCK = 256
OPTIM_8BIT_MIN_SIZE = 4096

BREAKDOWN_KEYS = ("base_weights", "lora_weights", "modules_to_save", "gradients",
                  "ddp_buckets", "optimizer_states", "activations", "kept_layer_outputs", "logits",
                  "autocast_weight_copies", "workspace", "cuda_context", "runtime", "allocator_overhead")


@dataclass
class Setup:
    """Everything that decides memory besides the architecture and the trainable parameters."""
    device: str = "cuda"                 # cuda | cpu
    quantization: str = "none"           # none | 4bit | 8bit
    double_quant: bool = True            # NF4 nested quantisation (the app always uses it)
    weight_bytes: int = 2                # dtype of unquantised base weights
    kbit_fp32: bool = True               # prepare_model_for_kbit_training casts the rest to fp32
    adapter_bytes: int = 4               # peft keeps LoRA weights in fp32
    embed_bytes: int | None = None       # embeddings/lm_head dtype if not that of the norms
    legacy_norm_cast: bool = False       # transformers < 4.31: RMSNorm returned its input dtype
    precision: str = "bf16"              # bf16 | fp16 | fp32 (autocast unless fp32)
    optimizer: str = "adamw_torch"
    batch_size: int = 1
    seq_len: int = 512
    gradient_checkpointing: bool = False
    attn_implementation: str = "sdpa"    # sdpa | flash_attention_2 | eager
    lora_dropout: float = 0.05
    lora_r: int = 16
    use_dora: bool = False
    cuda_context_bytes: int = CUDA_CONTEXT_BYTES
    adapted_layers: int = 0              # lora.last_layers: backprop stops below them (0 = all)
    answer_tokens: int | None = None     # answer-only head: positions projected per row
    answer_head: bool = False            # the run's own loss (speedups.answer_head) projects
    kept_layer_tokens: int = 0           # frozen_bottom: tokens whose lower-layer output is kept
    processes: int = 1                   # DDP processes (the estimate is per process)
    fused_lora: bool = False             # speedups.fused_lora: the adapter branch as one op
    cpu_kernels: bool = False            # speedups.cpu_kernels cover this model's modules

    @property
    def autocast(self) -> bool:
        return self.precision in ("bf16", "fp16")

    @property
    def quantized(self) -> bool:
        return self.quantization in ("4bit", "8bit")

    @property
    def nonquant_bytes(self) -> int:
        """dtype of what bitsandbytes leaves unquantised: norms, biases (and embeddings)."""
        return 4 if self.quantized and self.kbit_fp32 else self.weight_bytes

    @property
    def embed_dtype(self) -> int:
        return self.embed_bytes or self.nonquant_bytes

    @property
    def kernels(self) -> bool:
        return self.cpu_kernels and self.device == "cpu"


@dataclass
class Memory:
    breakdown: dict[str, int]
    peak_bytes: int
    pageable_bytes: int


def _quantized_linear_bytes(fin: int, fout: int, s: Setup) -> int:
    n = fin * fout
    if s.quantization == "8bit":
        return n + 4 * fout
    blocks = math.ceil(n / NF4_BLOCK)
    if s.double_quant:
        return math.ceil(n / 2) + blocks + 4 * math.ceil(blocks / NF4_DQ_BLOCK) + 4 * 256
    return math.ceil(n / 2) + 4 * blocks


def weight_bytes(arch: Arch, s: Setup) -> int:
    """Bytes of the frozen base model as it sits in memory after loading (and k-bit preparation)."""
    total = 0
    for m in arch.modules():
        for pname, n in m.params:
            if s.quantized and m.kind == "linear" and m.name != "lm_head" and pname == "weight":
                total += _quantized_linear_bytes(m.in_features, m.out_features, s)
            elif m.kind == "linear" and m.name != "lm_head" and pname == "weight":
                total += n * s.weight_bytes
            elif m.kind == "embedding" or m.name == "lm_head":
                total += n * s.embed_dtype
            else:
                total += n * s.nonquant_bytes
    return total


def _optimizer_bytes(numel: int, param_bytes: int, optimizer: str) -> int:
    if "8bit" in optimizer and numel >= OPTIM_8BIT_MIN_SIZE:
        return 2 * numel + 2 * 4 * math.ceil(numel / OPTIM_8BIT_BLOCK)
    if "8bit" in optimizer or "32bit" in optimizer:
        return 2 * 4 * numel  # bitsandbytes keeps 32-bit states in fp32
    return 2 * param_bytes * numel  # torch AdamW: exp_avg and exp_avg_sq like the parameter


def _dtypes(s: Setup) -> tuple[int, int]:
    """(matmul/autocast dtype, residual-stream dtype) in bytes.

    bitsandbytes layers return their input's dtype, so behind fp32 norms a quantised model's
    residual stream is fp32 whatever the embeddings are; otherwise it is the weights' dtype or
    the autocast dtype, whichever is wider.
    """
    A = 2 if s.autocast else s.weight_bytes
    if s.quantized:
        if s.legacy_norm_cast:  # norms hand back the embeddings' dtype: the stream keeps it
            return A, s.embed_dtype
        return A, max(s.embed_dtype, s.nonquant_bytes)
    return A, max(s.weight_bytes, A)


def _norm_saved(h: int, stream: int, norm_w: int, s: Setup) -> int:
    """Bytes an RMSNorm keeps per token: eager upcasts its input to fp32 and keeps that; the
    fused kernel (its weight in the stream's dtype) keeps the input as it came and 1/rms."""
    if s.kernels and stream == norm_w:
        return stream * h + 4
    return 4 * h + 4


def _layer_terms(arch: Arch, pc: ParamCount, s: Setup) -> tuple[float, float, float]:
    """(saved bytes per token per layer, fixed saved bytes per layer, workspace per token)."""
    h, i, H, qd, kvd = arch.hidden, arch.intermediate, arch.heads, arch.q_dim, arch.kv_dim
    seq, cuda = s.seq_len, s.device == "cuda"
    A, Rs = _dtypes(s)                                # autocast dtype, residual stream
    norm_w = s.nonquant_bytes if s.quantized else s.weight_bytes
    N = Rs if s.legacy_norm_cast else max(Rs, norm_w)  # norm output
    Q = N if s.quantized else A                       # q/k/v and gate/up outputs
    S = A if s.autocast else max(Q, Rs)               # what attention saves and returns
    padded = s.batch_size > 1

    saved = arch.norms_per_layer * _norm_saved(h, Rs, norm_w, s)
    if arch.qk_norm:
        saved += 4 * (qd + kvd)
    if s.attn_implementation == "eager":
        # the fused softmax keeps only the probabilities, which the next matmul keeps anyway
        # (it takes one dtype: queries, scores and mask all in the model's)
        fused_softmax = s.kernels and Q == s.embed_dtype and (not s.autocast or A == Q)
        saved += 3 * S * qd + (S if fused_softmax else 4 + S) * H * seq
        if arch.attn_softcap:  # tanh(scores / cap) keeps its output
            saved += S * H * seq
    else:
        kv_eff = qd if (padded and s.attn_implementation != "flash_attention_2") else kvd
        saved += S * (2 * qd + 2 * kv_eff) + 4 * H
    if padded and s.attn_implementation != "flash_attention_2":
        saved += S * seq  # the float attention mask made from the padding mask, saved per layer
    saved += (2 if s.kernels else 3) * Q * i  # SwiGLU: gate, up (and act(gate) in eager)

    # Adapters: input dtype of each adapted leaf, and which adapters share one input tensor.
    inputs = {"q_proj": ("attn", N), "k_proj": ("attn", N), "v_proj": ("attn", N),
              "qkv_proj": ("attn", N), "o_proj": ("o", S), "gate_proj": ("mlp", N),
              "up_proj": ("mlp", N), "gate_up_proj": ("mlp", N), "down_proj": ("down", Q)}
    shared_seen: set[str] = set()
    adapter_in = (A if s.autocast else s.adapter_bytes)
    fixed = 0.0
    for leaf, count in pc.adapted_per_layer(arch.layers).items():
        group, X = inputs.get(leaf, ("other", N))
        mod = next(m for m in pc.adapted if m.leaf == leaf)
        fin, fout = mod.in_features, mod.out_features
        # peft casts the input to the adapter dtype, except bitsandbytes layers under CUDA autocast
        casts = not (s.quantized and cuda and s.autocast)
        Xc = s.adapter_bytes if casts else X
        R = A if s.autocast else s.weight_bytes  # the base layer's output dtype
        if s.fused_lora and not (s.use_dora or s.quantized):
            # speedups.fused_lora: the (dropped-out) input and its keep-bits in R, A's output
            if s.lora_dropout > 0:
                per = 2 * R * fin
            elif R == X:
                per = 0 if group in shared_seen else X * fin
                shared_seen.add(group)
            else:
                per = R * fin
            saved += (per + R * s.lora_r) * count
            continue
        if s.lora_dropout > 0:
            per = (1 if cuda else Xc) * fin + (A if s.autocast else Xc) * fin
        elif (A if s.autocast else Xc) == X:
            per = 0 if group in shared_seen else X * fin  # the input itself, shared
            shared_seen.add(group)
        else:
            per = (A if s.autocast else Xc) * fin
        per += adapter_in * s.lora_r
        if s.use_dora:
            per += (A + Q) * fout
            if s.lora_dropout > 0 and (s.quantized or (s.autocast and s.weight_bytes != 2)):
                # DoRA re-runs the base layer on the dropped-out input, with a 16-bit copy of
                # the weight (dequantised, or cast by autocast) kept for the backward pass
                fixed += 2 * fin * fout * count
        saved += per * count
    work = 3 * max(Q, A) * i + 8 * h
    return saved, fixed, work


def estimate_memory(arch: Arch, pc: ParamCount, s: Setup) -> Memory:
    cuda = s.device == "cuda"
    T = s.batch_size * s.seq_len
    h, V, L = arch.hidden, arch.vocab, arch.layers
    A, Rs = _dtypes(s)

    b: dict[str, int] = dict.fromkeys(BREAKDOWN_KEYS, 0)
    b["base_weights"] = weight_bytes(arch, s)
    b["kept_layer_outputs"] = s.kept_layer_tokens * h * _dtypes(s)[1]
    pageable = 0
    embed_names = {m.name for m in arch.modules() if m.kind == "embedding"} | {"lm_head"}
    for t in pc.tensors:
        if t.group == "adapter":
            pbytes = s.adapter_bytes
        elif t.group == "copy" and t.module in embed_names:
            pbytes = s.embed_dtype
        elif t.group == "copy" and s.quantized and "_proj" in t.module:
            pbytes = s.weight_bytes  # a copy of a quantised layer is a plain 16-bit layer
        else:
            pbytes = s.nonquant_bytes if s.quantized else s.weight_bytes
        if t.group == "adapter":
            b["lora_weights"] += t.numel * pbytes
        elif t.group == "copy":
            b["modules_to_save"] += t.numel * pbytes
        b["gradients"] += t.numel * pbytes
        opt = _optimizer_bytes(t.numel, pbytes, s.optimizer)
        b["optimizer_states"] += opt
        if s.optimizer.startswith("paged") and cuda:
            pageable += opt

    if s.processes > 1:
        # DDP's reducer all-reduces gradients through flat buckets: a second copy of every
        # trainable gradient (the Trainer leaves gradient_as_bucket_view off)
        b["ddp_buckets"] = b["gradients"]

    per_token, per_layer_fixed, work_per_token = _layer_terms(arch, pc, s)

    # Autocast copies of frozen weights (saved for backward) and of the adapters (cached).
    lin_per_layer = lm_head = 0
    for m in arch.modules():
        if m.kind != "linear":
            continue
        if m.name == "lm_head":
            lm_head = m.in_features * m.out_features
        elif ".layers.0." in m.name:
            lin_per_layer += m.in_features * m.out_features
    layer_copy = head_copy = 0
    if s.autocast:
        if not s.quantized and s.weight_bytes != 2:
            layer_copy = 2 * lin_per_layer
        head_dtype = s.embed_dtype if s.quantized else s.weight_bytes
        if head_dtype != 2:
            head_copy = 2 * lm_head
        if s.adapter_bytes != 2:
            layer_copy += 2 * pc.adapter_params // max(L, 1)

    # Loss: fp32 log-softmax output + incoming gradient + its gradient (12 B), soft-capping extra.
    # The answer-only head projects the answer positions alone.
    T_head = T if s.answer_tokens is None else s.batch_size * min(s.answer_tokens, s.seq_len)
    logits = 12 * V * T_head + (2 * 2 * V * T_head if arch.logit_softcap else 0)
    head_w = s.embed_dtype if s.quantized else s.weight_bytes
    trained_head = any(m.name == "lm_head" for m in pc.adapted) or any(
        t.module == "lm_head" for t in pc.tensors if t.group == "copy")
    fused_loss = s.kernels and s.answer_head and not trained_head
    if fused_loss:
        # the fused loss: the logits and their gradient, in the head's dtype, live together
        # only inside the loss's forward; what it keeps is the hidden states' gradient
        logits = 2 * V * head_w * T_head
    final = _norm_saved(h, Rs, s.nonquant_bytes if s.quantized else s.weight_bytes, s) * T
    if any(m.name == "lm_head" for m in pc.adapted):
        # the adapter's input copy and mask, and B's vocabulary-wide output added to the logits
        final += (A + (1 if cuda else 4)) * h * T
        logits += 2 * A * V * T
    layer_act = per_token * T + per_layer_fixed
    workspace = work_per_token * T
    biggest = max((m.in_features * m.out_features for m in arch.modules()
                   if m.kind == "linear" and m.name != "lm_head"), default=0)
    if s.quantized:
        workspace += 2 * biggest  # bitsandbytes dequantises a weight to 16 bits to multiply
    if pc.copy_params:
        workspace += max(t.numel for t in pc.tensors if t.group == "copy") * A  # its weight grad
    if s.use_dora and pc.adapted:  # the weight norm of W + BA, in fp32, one layer at a time
        workspace += 4 * max(m.in_features * m.out_features for m in pc.adapted)

    if fused_loss:  # its peak comes in the forward pass, before any backward workspace
        if logits >= workspace:
            workspace = 0
        else:
            logits = h * head_w * T_head
    # Layers below the lowest adapted one need no gradient: autograd keeps nothing of them.
    L = min(L, s.adapted_layers) if s.adapted_layers else L
    if s.gradient_checkpointing:
        stored = L * Rs * h * T + final
        # Two candidate peaks: (a) the loss backward, with every layer's input kept; (b) a layer
        # recomputed and run backward (the loss tensors and lm_head's copy are gone by then).
        if logits + head_copy >= layer_act + layer_copy:
            b["activations"], b["logits"], b["autocast_weight_copies"] = stored, logits, head_copy
        else:
            b["activations"], b["autocast_weight_copies"] = stored + layer_act, layer_copy
        b["workspace"] = workspace
    else:
        b["activations"] = L * layer_act + final
        b["logits"] = logits
        b["autocast_weight_copies"] = L * layer_copy + head_copy
        b["workspace"] = workspace

    transient = b["activations"] + b["logits"] + b["autocast_weight_copies"] + b["workspace"]
    step = 4 * pc.trainable if s.optimizer == "adamw_torch" else 0  # foreach temporaries
    if step > transient:
        for key in ("activations", "logits", "autocast_weight_copies"):
            b[key] = 0
        b["workspace"] = transient = step
    if cuda:
        b["cuda_context"] = s.cuda_context_bytes
        b["allocator_overhead"] = int(GPU_FRAGMENTATION * transient)
    else:
        b["runtime"] = CPU_RUNTIME_BYTES
        b["allocator_overhead"] = int(CPU_FRAGMENTATION * transient)
    b = {k: int(v) for k, v in b.items()}
    return Memory(breakdown=b, peak_bytes=sum(b.values()), pageable_bytes=int(pageable))
