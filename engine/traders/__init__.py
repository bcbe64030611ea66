"""Decisions: the LLM provider clients, the prompt, answer parsing, the decision step that asks
every trader at once, and the hand-written LLM fixtures. `strategies/` (the strategy interface and
the strategies) is part of this layer.

May import: the core, `engine.market`, `engine.paper` and `strategies`.
"""
