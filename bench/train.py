"""Training throughput: selfchat's LoRA training against two plain Hugging Face baselines, in one run.

Same base model (models/base), same dialogues (the first --dialogues of data/train.jsonl), one epoch each,
same batch size, same seed:
  (a) Baize's finetune.py settings: every example padded to 512 tokens, loss on every (non-pad) token,
      LoRA on q,k,v,down,gate,up projections; plain Trainer.
  (b) plain Trainer + PEFT, dynamic padding, loss on the assistant's tokens (full logits).
  selfchat: the train stage's trainer with the default params (output head on trained positions only, the
      same random batch order as (b)), and the same with train.group_by_length.
Times are the Trainer's train_runtime (model loading excluded for all). Prints trained tokens per second
(assistant tokens: the same count for every variant, so the ratio is the time ratio), the ratios, and each
adapter's loss on assistant tokens of held-back dialogues.
    python bench/train.py [--dialogues 16] [--validation 6] [--batch-size 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    DataCollatorForLanguageModeling,
    DataCollatorForSeq2Seq,
    Trainer,
    TrainingArguments,
    set_seed,
)

from tasks.core.config import TrainParams
from tasks.core.jsonl import read_jsonl
from tasks.core.masking import IGNORE, Example, build_examples
from tasks.core.paths import BASE_DIR, TRAIN
from tasks.models.student import load_tokenizer
from tasks.train.lora import train_lora, trained_tokens
from tasks.train.loss import trained_positions_loss

BAIZE_TARGETS = ["q_proj", "k_proj", "v_proj", "down_proj", "gate_proj", "up_proj"]  # Baize's finetune.py
BAIZE_LENGTH = 512
TARGETS = {"(a)": 1.5, "(b)": 1.2}


def plain_trainer_run(examples: list[Example], params: TrainParams, baize: bool, tokenizer: Any,
                      scratch: Path) -> tuple[torch.nn.Module, float]:
    set_seed(params.seed)
    model = AutoModelForCausalLM.from_pretrained(BASE_DIR, dtype=torch.float32)
    targets = BAIZE_TARGETS if baize else params.lora.targets
    model = get_peft_model(model, LoraConfig(r=params.lora.r, lora_alpha=params.lora.alpha,
                                             lora_dropout=params.lora.dropout, target_modules=targets,
                                             task_type="CAUSAL_LM"))
    if baize:  # padded to 512; the collator labels every non-pad token
        rows = [{"input_ids": e.input_ids + [tokenizer.pad_token_id] * (BAIZE_LENGTH - len(e.input_ids)),
                 "attention_mask": [1] * len(e.input_ids) + [0] * (BAIZE_LENGTH - len(e.input_ids))}
                for e in examples]
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    else:
        rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE)
    args = TrainingArguments(output_dir=str(scratch), num_train_epochs=1, per_device_train_batch_size=params.batch_size,
                             learning_rate=params.learning_rate, warmup_steps=params.warmup_ratio,
                             lr_scheduler_type=params.lr_scheduler, logging_steps=1, save_strategy="no",
                             report_to="none", seed=params.seed, data_seed=params.seed, use_cpu=True,
                             remove_unused_columns=False, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows), data_collator=collator)
    return model, float(trainer.train().metrics["train_runtime"])


def selfchat_run(examples: list[Example], params: TrainParams, tokenizer: Any,
                 scratch: Path) -> tuple[torch.nn.Module, float]:
    model, outcome = train_lora(BASE_DIR, tokenizer, examples, [], params, scratch)
    return model, outcome.summary["train_runtime_s"]


@torch.no_grad()
def assistant_loss(model: torch.nn.Module, examples: list[Example]) -> float:
    model.eval()
    total, count = 0.0, 0
    for e in examples:
        ids = torch.tensor([e.input_ids])
        loss, n = trained_positions_loss(model, ids, torch.ones_like(ids), torch.tensor([e.labels]))
        total, count = total + float(loss), count + int(n)
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dialogues", type=int, default=16)
    parser.add_argument("--validation", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], help="variants to leave out, by their first word: (a) (b)")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    tokenizer = load_tokenizer(BASE_DIR)
    dialogues = list(read_jsonl(TRAIN))[: args.dialogues + args.validation]
    examples, _ = build_examples(dialogues, tokenizer, "baize", BAIZE_LENGTH)
    train, held = examples[: args.dialogues], examples[args.dialogues:]
    params = TrainParams(epochs=1, batch_size=args.batch_size, bf16=False, validation_fraction=0.0,
                         save_steps=10_000, max_length=BAIZE_LENGTH, group_by_length=False)
    tokens = trained_tokens(train)
    print(f"{len(train)} dialogues, {tokens} assistant tokens, batch {args.batch_size}, 1 epoch, "
          f"{torch.get_num_threads()} threads; held-out loss on {len(held)} dialogues")
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        variants = (
            ("(a) Baize finetune.py", lambda: plain_trainer_run(train, params, True, tokenizer, Path(scratch))),
            ("(b) Trainer+PEFT dynamic padding", lambda: plain_trainer_run(train, params, False, tokenizer,
                                                                            Path(scratch))),
            ("selfchat, length-grouped", lambda: selfchat_run(
                train, params.model_copy(update={"group_by_length": True}), tokenizer, Path(scratch) / "grouped")),
            ("selfchat", lambda: selfchat_run(train, params, tokenizer, Path(scratch) / "selfchat")))
        for name, run in variants:
            if name.split()[0] in args.skip:
                continue
            model, seconds = run()
            results[name] = (seconds, assistant_loss(model, held) if held else float("nan"))
            print(f"  {name:34s} {seconds:7.1f} s  {tokens / seconds:7.1f} trained tokens/s  "
                  f"held-out loss {results[name][1]:.3f}", flush=True)
            del model
    ours = results["selfchat"][0]
    for name, (seconds, loss) in results.items():
        if name.startswith("selfchat") or "selfchat" not in results:
            continue
        key = name.split()[0]
        print(f"selfchat vs {name}: {seconds / ours:.2f}x tokens/s (target >= {TARGETS[key]}x), "
              f"loss {results['selfchat'][1]:.3f} vs {loss:.3f}")


if __name__ == "__main__":
    main()
