"""The application: the command line, building the parts, supervising them, the control target.

The top layer: it may import everything; nothing imports it (but `run.py`).
"""
