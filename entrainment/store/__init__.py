"""Where results live: atomic files, the table schema, provenance, DuckDB views, the output-folder lock."""
