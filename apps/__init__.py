"""The Gradio apps: `compare` (every checkpoint side by side) and `arena` (anonymous battles that collect votes)."""
