"""Stage 5, train: LoRA on the base model, loss on the assistant's turns only."""
