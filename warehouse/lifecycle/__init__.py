"""A day's life after collection: exported to the Parquet lake (export, with what it reads: extract,
pending, days), verified (verify), dropped from PostgreSQL (retention); the lake's folders: layout."""
