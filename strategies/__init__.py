"""Strategies: the interface (`base`), the LLM strategy, the rule-based baselines, the registry.

Part of the traders layer: may import the core, `engine.market`, `engine.paper` and
`engine.traders` (never `engine.store`, `engine.web` or `engine.app`).
"""
