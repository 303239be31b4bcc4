"""Models built from cells: classifiers, video predictors, captioning decoders."""
