"""Stage 3, collect: the teacher chats with itself about each seed (Baize's self-chat)."""
