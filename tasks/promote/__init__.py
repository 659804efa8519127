"""Deciding a sweep: its members side by side, and the one that may go to the promotion gate."""
