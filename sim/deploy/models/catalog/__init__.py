"""Bundled Hugging Face config.json files (package data; see index.json)."""
