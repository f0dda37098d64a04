"""DexWM training: datasets (EgoDex, DROID, simulator), latent cache, trainers, evaluation."""
