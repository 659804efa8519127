"""Export: the champion as a file a CPU user deploys (GGUF for llama.cpp and Ollama, with its chat template and
guardrail prompt), checked against the answers of the model that was evaluated."""
