"""The request engine that collection and distillation's judge share: bounded concurrency, rate limits,
retries with a circuit breaker, a hard budget with a cost ledger, and a journal that makes an interrupted run
resume without asking anything twice."""
