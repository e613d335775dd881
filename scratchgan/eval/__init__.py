"""Sample quality: the evaluator classifiers trained with scratchgan's own layers, the metric maths
(Frechet distance, coverage, precision/recall) and the corruptions that check the metrics."""
