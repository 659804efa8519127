"""The student as a model: the base and adapter on disk (student), greedy answers in the training format
(generation), the adapter's model card and lineage (adapter_card), and the registered pyfunc model (chat_model,
logged by path)."""
