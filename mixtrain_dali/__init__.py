"""MixTrain-DALI: a DALI ImageFolder pipeline with MixTrain input mixing."""
