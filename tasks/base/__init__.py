"""Stage 1, base: the student model as plain safetensors + tokenizer."""
