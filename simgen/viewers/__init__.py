"""Viewers for simgen data in the tools microscopists use (napari)."""
