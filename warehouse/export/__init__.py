"""DuckDB → Parquet export jobs."""
