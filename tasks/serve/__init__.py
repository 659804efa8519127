"""Serving a registered version: an OpenAI-compatible chat endpoint (`make serve`) and a terminal chat
(`make chat`). Not a pipeline stage: it reads the registry the register stage writes."""
