"""Time and peak GPU memory of one stage-1 training step of the full-size IDEFICS2-8B
preference-token model (000 §4.1): 4-bit nf4 weights, LoRA on the language model, N_ref = 8
history pairs + the target = 17 images of 512×512 per sequence, the liked and the disliked
target as the two sequences of one example, prompts at the paper's 100-token cap.

    python bench/vlm_step_memory.py [--config assets/model_configs/idefics2-8b.json] [--out result.json]

Weights are random (the Hub is unreachable; time and memory do not depend on their values):
the model is initialised on the GPU in bfloat16 from the config, then every linear layer but
lm_head is quantized to nf4 in place, as from_pretrained(quantization_config=nf4) would. The
training steps run with the process's GPU memory capped at --memory-cap-gib (24 by default),
so on a larger card the run proves the fit instead of extrapolating it. Needs CUDA and bitsandbytes.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn


from prefstudio.preference.losses import preference_loss  # noqa: E402
from prefstudio_research.preference.offline_vlm import idefics2_from_config  # noqa: E402
from prefstudio.preference.vlm import ImagePair, VLMConfig, VLMPreferenceModel  # noqa: E402

GIB = 2**30


def quantize_nf4_(model: nn.Module, compute_dtype: torch.dtype, skip=("lm_head",)) -> int:
    """Replace every nn.Linear (but `skip`) by a bitsandbytes nf4 Linear4bit holding its weights."""
    import bitsandbytes as bnb

    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear or name in skip:
                continue
            quantized = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                          compute_dtype=compute_dtype, compress_statistics=True,
                                          quant_type="nf4", device="meta")
            weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, compress_statistics=True,
                                       quant_type="nf4", module=quantized)
            quantized.weight = weight.to(child.weight.device)  # quantizes on the GPU
            if child.bias is not None:
                quantized.bias = nn.Parameter(child.bias.data, requires_grad=False)
            setattr(parent, name, quantized)
            count += 1
    model.is_loaded_in_4bit = True  # what from_pretrained sets; peft picks its 4-bit LoRA layers by it
    return count


def random_image(size, generator):
    from PIL import Image

    pixels = (torch.rand(size, size, 3, generator=generator) * 255).byte().numpy()
    return Image.fromarray(pixels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="assets/model_configs/idefics2-8b.json")
    parser.add_argument("--n-ref", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--memory-cap-gib", type=float, default=24.0,
                        help="cap this process's GPU memory for the training steps (an out-of-memory error = does not fit)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA GPU: no GPU is visible to torch here", file=sys.stderr)
        return 2
    device, dtype = torch.device("cuda"), torch.bfloat16
    result = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    for package in ("transformers", "peft", "bitsandbytes"):
        result[package] = __import__(package).__version__

    start = time.perf_counter()
    hf_model, processor = idefics2_from_config(args.config, device, dtype)
    result["parameters_billion"] = round(sum(p.numel() for p in hf_model.parameters()) / 1e9, 3)
    result["build_bf16_s"] = round(time.perf_counter() - start, 1)
    result["bf16_weights_gib"] = round(torch.cuda.memory_allocated() / GIB, 2)
    start = time.perf_counter()
    result["linear_layers_quantized"] = quantize_nf4_(hf_model, dtype)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    result["quantize_s"] = round(time.perf_counter() - start, 1)
    result["nf4_model_gib"] = round(torch.cuda.memory_allocated() / GIB, 2)

    result["attention_implementation"] = {"text": hf_model.config.text_config._attn_implementation,
                                          "vision": hf_model.config.vision_config._attn_implementation}
    config = VLMConfig(model=str(args.config), compute_dtype="bfloat16", image_size=512, max_prompt_tokens=100)
    model = VLMPreferenceModel(hf_model, processor, config).train()
    params = model.stage_parameters(1)
    result["trainable_lora_parameters"] = sum(p.numel() for p in params)
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=1e-2)  # 000 §4.1
    generator = torch.Generator().manual_seed(0)
    long_prompt = " ".join(["a dramatic landscape with silhouettes under a night sky"] * 30)  # > 100 tokens
    history = [ImagePair(random_image(512, generator), random_image(512, generator), long_prompt)
               for _ in range(args.n_ref)]
    liked, disliked = random_image(512, generator), random_image(512, generator)
    batch = model.encode([model.sequence(history, liked, long_prompt), model.sequence(history, disliked, long_prompt)])
    result["images_per_sequence"] = int(batch["pixel_values"].shape[1])
    result["sequence_tokens"] = int(batch["input_ids"].shape[1])
    result["pixel_values_shape"] = list(batch["pixel_values"].shape)

    def step():
        logits = model.pair_logits(history, liked, disliked, long_prompt)
        loss = preference_loss(*logits).total
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    # From here on the allocator may hold at most the cap: a step that needs more fails.
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(args.memory_cap_gib * GIB / total)
    result["memory_cap_gib"] = args.memory_cap_gib
    try:
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result["warmup_loss"] = step()
        torch.cuda.synchronize()
        result["warmup_step_s"] = round(time.perf_counter() - start, 2)
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            step()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        result["stage1_step_s"] = [round(t, 2) for t in times]
        result["stage1_step_median_s"] = round(sorted(times)[len(times) // 2], 2)
        result["stage1_peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
        result["stage1_peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 2)

        # Stage 2 for completeness: P_v alone (L_p = 10), everything else frozen.
        model.add_preference_tokens(10)
        params = model.stage_parameters(2)
        optimizer = torch.optim.AdamW(params, lr=1e-3)
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        result["stage2_step_s"] = round(time.perf_counter() - start, 2)
        result["stage2_peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
        result["fits_under_cap"] = True  # both stages ran with the allocator capped
    except torch.cuda.OutOfMemoryError as err:
        result["fits_under_cap"] = False
        result["out_of_memory"] = str(err).splitlines()[0]
        result["peak_allocated_before_oom_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    from prefstudio_research.report import write_section

    write_section("vlm_step_memory", section(result, "python bench/vlm_step_memory.py " + " ".join(sys.argv[1:])))
    return 0


def section(result: dict, command: str) -> str:
    """The docs/benchmarks.md section for one run's result."""
    lines = ["## Preference tokens, VLM backbone: one training step of full-size IDEFICS2-8B (issue 5)", "",
             f"Command: `{command.strip()}` on one {result['gpu']} (torch {result['torch']}, transformers "
             f"{result['transformers']}, peft {result['peft']}, bitsandbytes {result['bitsandbytes']}). Random weights "
             f"from the architecture's config ({result['parameters_billion']} B parameters) in 4-bit nf4 "
             f"({result['nf4_model_gib']} GiB), LoRA on the language model ({result['trainable_lora_parameters']:,} "
             f"trainable); one example = liked and disliked target under the same {result['images_per_sequence'] // 2}-pair "
             f"history: 2 sequences × {result['images_per_sequence']} images of 512², {result['sequence_tokens']} tokens each; "
             f"the process's allocator capped at {result['memory_cap_gib']:.0f} GiB.", ""]
    if result["fits_under_cap"]:
        lines += ["| step | median time | peak allocated | peak reserved | target |", "|---|---|---|---|---|",
                  f"| stage 1 (LoRA) | {result['stage1_step_median_s']} s | {result['stage1_peak_allocated_gib']} GiB | "
                  f"{result['stage1_peak_reserved_gib']} GiB | ≤ 24 GB |",
                  f"| stage 2 (P_v alone) | {result['stage2_step_s']} s | {result['stage2_peak_allocated_gib']} GiB | – | ≤ 24 GB |"]
    else:
        lines.append(f"Did not fit: {result['out_of_memory']} (peak {result['peak_allocated_before_oom_gib']} GiB).")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
