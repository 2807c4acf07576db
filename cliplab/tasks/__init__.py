"""Tasks: pure functions over embedding arrays. They never load models or images."""
