"""arena: LLMs trading crypto side by side on paper accounts, in one asyncio loop."""

__version__ = "0.1.0"
