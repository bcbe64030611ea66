"""Storage: the database (DATABASE_URL or embedded), migrations, events as rows, the writer that
batches them into Postgres, the spill file for outages, and recovery at start.

May import: the core and the layers below (market, paper, traders).
"""
