"""The demo content `lfops init` seeds: a small instruction dataset and a tiny Llama made here (no hub is reachable)."""

from __future__ import annotations

import json
import random
from pathlib import Path

DEMO_DATASET = "demo_arith"
DEMO_MODEL = "tiny-llama"


def demo_records(n: int = 64, seed: int = 0) -> list[dict[str, str]]:
    """Alpaca-format records: small sums and products written out in words and digits."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        op, result = rng.choice([("plus", a + b), ("times", a * b)])
        records.append({"instruction": f"What is {a} {op} {b}?", "input": "", "output": f"{a} {op} {b} is {result}."})
    return records


def dataset_files() -> dict[str, str]:
    """`data/` of the config repository: dataset_info.json and the demo dataset it points to."""
    records = demo_records()
    info = {DEMO_DATASET: {"file_name": f"{DEMO_DATASET}.json", "formatting": "alpaca"}}
    return {
        "data/dataset_info.json": json.dumps(info, indent=2) + "\n",
        f"data/{DEMO_DATASET}.json": json.dumps(records, indent=1) + "\n",
    }


def make_tiny_model(path: Path, seed: int = 0) -> Path:
    """A random-init Llama (hidden 64, 2 layers) with a byte-level BPE tokenizer trained on the demo data."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    if (path / "config.json").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    texts = [" ".join(r.values()) for r in demo_records(512, seed=1)]
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=512, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def example_config(model_path: Path) -> dict:
    """A LoRA SFT config for the tiny model that trains in seconds on a CPU."""
    return {
        "model_name_or_path": str(model_path),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_target": "all",
        "lora_rank": 8,
        "dataset": DEMO_DATASET,
        "dataset_dir": "data",
        "template": "default",
        "cutoff_len": 128,
        "max_samples": 64,
        "output_dir": "saves/example",
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1.0e-3,
        "num_train_epochs": 2.0,
        "lr_scheduler_type": "cosine",
        "logging_steps": 1,
        "save_steps": 1000,
        "seed": 42,
        "report_to": "none",
        "overwrite_cache": True,
        "preprocessing_num_workers": 1,
    }
