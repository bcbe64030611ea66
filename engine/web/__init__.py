"""The web face: the control API (aiohttp), Prometheus metrics endpoint and the live page.

May import: every layer below it; it reads state and sends commands through a target object.
"""
