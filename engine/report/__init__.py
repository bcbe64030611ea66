"""Run reports (Markdown and self-contained HTML) and the `db` command's way into the data."""
