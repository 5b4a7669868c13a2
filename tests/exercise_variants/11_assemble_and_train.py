"""Chapter 11 part 1's exercises against wrappers of the finished pieces and plausible wrong answers.

Each source replaces the exercise's solution cell in the kernel that executed the chapter (see
tests/test_exercises.py); the check cell must then raise ForbiddenCall (wrapper) or
AssertionError (wrong answers). Most wrong answers are the reference solution with one line
changed, written as a template whose slots hold that line.
"""

# Exercise 1: the reference with the classification of each parameter as a slot.
_COUNT = """
def count_from_modules(model):
    counts = dict.fromkeys(("embed_tokens", "attention", "norms", "mlp", "router", "experts", "lm_head"), 0)
    for path, tensor in {parameters}:
        if {norm}:
            part = "norms"
        elif ".self_attn." in path:
            part = "attention"
        elif ".experts." in path:
            part = "experts"
        elif {router}:
            part = "router"
        elif ".mlp." in path:
            part = "mlp"
        else:
            part = "embed_tokens" if path.endswith("embed_tokens.weight") else "lm_head"
        counts[part] += tensor.numel()
    counts["total"] = sum(counts.values())
    return counts
"""
_OK = dict(
    parameters="model.named_parameters()",
    norm="tensor.ndim == 1",
    router='path.endswith(".mlp.gate.weight")',
)

# Exercise 2: the reference with the renaming tables, the unstacking and the tie as slots.
_LOAD = """
def load_llama_cpp_names(state, config):
    import re

    global_names = {{"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}}
    layer_names = {{"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
                   "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                   "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.{q_norm}",
                   "attn_k_norm": "self_attn.{k_norm}", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                   "ffn_down": "mlp.down_proj", "ffn_gate_inp": "mlp.gate"}}
    stacked = {{"ffn_gate_exps": "{gate_exps}", "ffn_up_exps": "{up_exps}", "ffn_down_exps": "down_proj"}}
    renamed = {{}}
    for key, tensor in state.items():
        match = re.fullmatch(r"(?:blk\\.(\\d+)\\.)?(\\w+)\\.weight", key)
        layer, kind = match.groups() if match else (None, None)
        if layer is None and kind in global_names:
            renamed[global_names[kind] + ".weight"] = tensor
        elif layer is not None and kind in layer_names:
            renamed[f"model.layers.{{layer}}.{{layer_names[kind]}}.weight"] = tensor
        elif layer is not None and kind in stacked:
            for j, expert_matrix in enumerate(tensor.unbind(0)):
                renamed[f"model.layers.{{layer}}.mlp.experts.{{j}}.{{stacked[kind]}}.weight"] = expert_matrix
        else:
            {unknown}
    target = Qwen3ForCausalLM(config)
    result = target.load_state_dict(renamed, strict=False)
    missing = [k for k in result.missing_keys if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if {refuse}:
        raise ValueError(f"checkpoint does not fit the config: missing {{missing}}, unexpected {{result.unexpected_keys}}")
    {tie}
    return target.eval()
"""
_LOAD_OK = dict(
    q_norm="q_norm",
    k_norm="k_norm",
    gate_exps="gate_proj",
    up_exps="up_proj",
    unknown='raise ValueError(f"tensor {key!r} has no place in a Qwen3 model")',
    refuse="missing or result.unexpected_keys",
    tie="pass",
)

# Exercise 3: the reference with the set of counted tokens and the penalty as slots.
_PENALTY = """
def repetition_penalty(logits, input_ids, penalty, prompt_lengths=None):
    counted = torch.ones_like(input_ids, dtype=torch.bool)
    if prompt_lengths is not None and {use_prompt}:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        counted = positions[None, :] >= torch.as_tensor(prompt_lengths, device=input_ids.device)[:, None]
    occurrences = torch.zeros(logits.shape, dtype=torch.int32, device=logits.device)
    occurrences.scatter_add_(1, {ids}, {counted})
    penalised = {penalised}
    return torch.where(occurrences > 0, penalised, logits)
"""
_PENALTY_OK = dict(
    use_prompt="True",
    ids="input_ids",
    counted="counted.int()",
    penalised="torch.where(logits > 0, logits / penalty, logits * penalty)",
)

# Exercise 4: the reference with the start, the score of an extension and its update as slots.
_BEAM = """
def beam_search(model, input_ids, max_new_tokens, num_beams=2):
    beams = {start}
    scores = torch.zeros(len(beams), device=input_ids.device)
    with torch.inference_mode():
        while beams.shape[1] < input_ids.shape[1] + max_new_tokens:
            log_probs = {log_probs}
            vocab = log_probs.shape[-1]
            best = ({extend}).flatten().topk({width})
            beams = torch.cat([beams[best.indices // vocab], (best.indices % vocab)[:, None]], dim=1)
            scores = {new_scores}
    return beams[0], float(scores[0])
"""
_BEAM_OK = dict(
    start="input_ids[:1]",
    log_probs="model(beams).logits[:, -1].float().log_softmax(dim=-1)",
    extend="scores[:, None] + log_probs",
    width="num_beams",
    new_scores="best.values",
)

# Exercise 5: the reference with the prefill mask, the later masks and the padding side as slots.
_BATCH = """
def generate_batch(model, prompts, max_new_tokens):
    from tinyqwen.context import KVCache

    longest = max(len(p) for p in prompts)
    padding = torch.tensor([longest - len(p) for p in prompts])
    ids = torch.stack([{pad} for p in prompts])
    is_real = {is_real}
    causal = torch.ones(longest, longest, dtype=torch.bool).tril()
    mask = {prefill_mask}
    positions = (torch.arange(longest)[None, :] - padding[:, None]).clamp(min=0)
    cache, new = KVCache(model.config.num_hidden_layers), []
    with torch.inference_mode():
        while len(new) < max_new_tokens:
            logits = model(ids, kv_cache=cache, attn_mask=mask[:, None], position_ids=positions).logits
            ids = logits[:, -1].argmax(dim=-1, keepdim=True)
            new.append(ids)
            is_real = torch.cat([is_real, torch.ones_like(ids, dtype=torch.bool)], dim=1)
            mask, positions = {step_mask}, positions[:, -1:] + 1
    tokens = torch.cat(new, dim=1)
    return [torch.cat([p, row]) for p, row in zip(prompts, tokens)]
"""
_BATCH_OK = dict(
    pad="torch.cat([p.new_zeros(longest - len(p)), p])",
    is_real="torch.arange(longest)[None, :] >= padding[:, None]",
    prefill_mask="(causal & is_real[:, None, :]) | torch.eye(longest, dtype=torch.bool)",
    step_mask="is_real[:, None, :]",
)

VARIANTS = {
    "ch11-ex1-module-count": {
        # the chapter's count from the config
        "wrapper": """
def count_from_modules(model):
    counts = parameter_counts(model.config)
    return {k: counts[k] for k in ("embed_tokens", "attention", "norms", "mlp", "router", "experts", "lm_head", "total")}
""",
        "wrong": {
            "state_dict(): a tied matrix counted twice": _COUNT.format(
                **{**_OK, "parameters": "model.state_dict().items()"}
            ),
            "every name counted, the config says whether the head is tied": _COUNT.format(
                **{
                    **_OK,
                    "parameters": "[(n, p) for n, p in model.named_parameters(remove_duplicate=False)"
                    ' if not (n == "lm_head.weight" and model.config.tie_word_embeddings)]',
                }
            ),
            "the router counted with the MLP": _COUNT.format(**{**_OK, "router": "False"}),
            "q_norm and k_norm counted as attention": _COUNT.format(
                **{**_OK, "norm": 'tensor.ndim == 1 and ".self_attn." not in path'}
            ),
        },
    },
    "ch11-ex2-llama-cpp-names": {
        # the chapter's loader, on a folder written with the given names as they are
        "wrapper": """
def load_llama_cpp_names(state, config):
    import tempfile

    folder = tempfile.mkdtemp()
    save_safetensors_dir(state, folder)
    config.to_json(Path(folder) / "config.json")
    return Qwen3ForCausalLM.from_pretrained(folder)
""",
        "wrong": {
            "q_norm and k_norm swapped": _LOAD.format(
                **{**_LOAD_OK, "q_norm": "k_norm", "k_norm": "q_norm"}
            ),
            "the experts' gate and up matrices swapped": _LOAD.format(
                **{**_LOAD_OK, "gate_exps": "up_proj", "up_exps": "gate_proj"}
            ),
            "an unknown tensor skipped silently": _LOAD.format(
                **{**_LOAD_OK, "unknown": "continue"}
            ),
            "a missing tensor left at its random initialisation": _LOAD.format(
                **{**_LOAD_OK, "refuse": "result.unexpected_keys"}
            ),
            "the tied head given its own copy of the embedding": _LOAD.format(
                **{
                    **_LOAD_OK,
                    "tie": "if config.tie_word_embeddings:\n"
                    "        target.lm_head.weight = torch.nn.Parameter(target.model.embed_tokens.weight.detach().clone())",
                }
            ),
        },
    },
    "ch11-ex3-repetition-penalty": {
        # transformers' logits processor
        "wrapper": """
def repetition_penalty(logits, input_ids, penalty, prompt_lengths=None):
    import transformers

    processor = transformers.RepetitionPenaltyLogitsProcessor(penalty=penalty, prompt_ignore_length=prompt_lengths)
    return processor(input_ids, logits.clone())
""",
        "wrong": {
            "every repeated logit divided, whatever its sign": _PENALTY.format(
                **{**_PENALTY_OK, "penalised": "logits / penalty"}
            ),
            "penalised once per occurrence": """
def repetition_penalty(logits, input_ids, penalty, prompt_lengths=None):
    counted = torch.ones_like(input_ids, dtype=torch.bool)
    if prompt_lengths is not None:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        counted = positions[None, :] >= torch.as_tensor(prompt_lengths, device=input_ids.device)[:, None]
    occurrences = torch.zeros(logits.shape, dtype=torch.int32, device=logits.device)
    occurrences.scatter_add_(1, input_ids, counted.int())
    factor = penalty ** occurrences.to(logits.dtype)
    return torch.where(logits > 0, logits / factor, logits * factor)
""",
            "every row penalised for every row's tokens": _PENALTY.format(
                **{
                    **_PENALTY_OK,
                    "ids": "input_ids.reshape(1, -1).expand(len(logits), -1)",
                    "counted": "counted.int().reshape(1, -1).expand(len(logits), -1)",
                }
            ),
            "the prompt still counts": _PENALTY.format(**{**_PENALTY_OK, "use_prompt": "False"}),
        },
    },
    "ch11-ex4-beam-search": {
        # transformers' beam search on a copy of the model
        "wrapper": """
def beam_search(model, input_ids, max_new_tokens, num_beams=2):
    import transformers

    hf = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**model.config.to_dict()))
    hf.load_state_dict(model.state_dict(), strict=False)
    out = hf.generate(input_ids, attention_mask=torch.ones_like(input_ids), num_beams=num_beams, do_sample=False,
                      max_new_tokens=max_new_tokens, length_penalty=0.0, pad_token_id=0,
                      output_scores=True, return_dict_in_generate=True)
    return out.sequences[0], float(out.sequences_scores[0])
""",
        "wrong": {
            "greedy: one beam": _BEAM.format(**{**_BEAM_OK, "width": "1"}),
            "two copies of the prompt to start: the first step keeps one token twice": _BEAM.format(
                **{**_BEAM_OK, "start": "input_ids[:1].repeat(num_beams, 1)"}
            ),
            "each extension scored by its last token only": _BEAM.format(
                **{
                    **_BEAM_OK,
                    "extend": "log_probs + 0 * scores[:, None]",
                    "new_scores": "scores[best.indices // vocab] + best.values",
                }
            ),
            "raw logits instead of log-probabilities": _BEAM.format(
                **{**_BEAM_OK, "log_probs": "model(beams).logits[:, -1].float()"}
            ),
        },
    },
    "ch11-ex5-padded-batch": {
        # the chapter's generate, one prompt at a time
        "wrapper": """
def generate_batch(model, prompts, max_new_tokens):
    return [model.generate(p[None], max_new_tokens=max_new_tokens)[0] for p in prompts]
""",
        "wrong": {
            "the padding visible to every query": _BATCH.format(
                **{
                    **_BATCH_OK,
                    "prefill_mask": "causal[None].expand(len(prompts), -1, -1)",
                    "step_mask": "torch.ones_like(is_real)[:, None, :]",
                }
            ),
            "the padding hidden in the first call only": _BATCH.format(
                **{**_BATCH_OK, "step_mask": "torch.ones_like(is_real)[:, None, :]"}
            ),
            "right padding, next token read from the last column": _BATCH.format(
                **{
                    **_BATCH_OK,
                    "pad": "torch.cat([p, p.new_zeros(longest - len(p))])",
                    "is_real": "torch.arange(longest)[None, :] < (longest - padding)[:, None]",
                }
            ),
            "one prompt at a time, without a cache": """
def generate_batch(model, prompts, max_new_tokens):
    out = []
    for p in prompts:
        tokens = p[None]
        with torch.inference_mode():
            for _ in range(max_new_tokens):
                tokens = torch.cat([tokens, model(tokens).logits[:, -1:].argmax(-1)], dim=1)
        out.append(tokens[0])
    return out
""",
        },
    },
}
