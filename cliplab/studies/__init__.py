"""Studies compose the pipeline for one command: model + dataset -> cached embeddings -> task -> result rows."""
