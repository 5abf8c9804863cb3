"""The Iceberg warehouse: catalogs, tables, reads, commits and maintenance. The only code that
imports pyiceberg."""
