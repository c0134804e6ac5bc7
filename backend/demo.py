"""The demo content `lfops init` seeds: a small instruction dataset, a tiny Llama made here (no hub is reachable) and
the example configs of the top-level `configs/` folder."""

from __future__ import annotations

import importlib.metadata
import json
import random
from pathlib import Path

from backend.errors import LfopsError

DEMO_DATASET = "demo_arith"
DEMO_MODEL = "tiny-llama"
DEMO_MODEL_PLACEHOLDER = "@DEMO_MODEL@"  # in configs/*.yaml: replaced by the demo model's path at `lfops init`
INSTALLED_CONFIGS = "share/lfops/configs"  # where pyproject's data-files install configs/ under the prefix


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


def example_configs_dir() -> Path:
    """The top-level `configs/` folder: beside the `backend` package in a checkout (or an editable install); in an
    installed lfops, where pyproject's data-files put it (`<prefix>/share/lfops/configs`)."""
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "configs").is_dir():
        return checkout / "configs"
    try:
        installed = importlib.metadata.distribution("lfops").files or []
    except importlib.metadata.PackageNotFoundError:
        installed = []
    for file in installed:
        if file.as_posix().endswith(f"{INSTALLED_CONFIGS}/{file.name}"):
            return Path(str(file.locate())).resolve().parent
    raise LfopsError(f"the example configs are missing: no configs/ beside {checkout} and none installed")


def example_configs(model_path: Path) -> dict[str, str]:
    """`configs/*.yaml` of the config repository: each example with the demo model's path filled in, in canonical
    form (`configs/example.yaml` is a LoRA SFT of the tiny model that trains in seconds on a CPU)."""
    from backend.config import TrainConfig

    seeded = {}
    for path in sorted(example_configs_dir().glob("*.yaml")):
        text = path.read_text().replace(DEMO_MODEL_PLACEHOLDER, str(model_path))
        seeded[f"configs/{path.name}"] = TrainConfig.parse(text, str(path)).canonical_yaml()
    return seeded
