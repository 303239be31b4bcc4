"""Figures: learning curves, digit grids, frame grids and GIFs, attention maps."""
