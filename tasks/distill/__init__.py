"""Self-Distill with Feedback (Baize v2): the parent adapter samples k answers per question, a judge scores
each through the collection engine, and the best answer per question trains the next adapter (a DPO
variant trains on best-vs-worst pairs)."""
