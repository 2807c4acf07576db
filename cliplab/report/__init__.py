"""Presentation: tables for people, JSON/CSV/parquet for machines. No metric is computed here."""
