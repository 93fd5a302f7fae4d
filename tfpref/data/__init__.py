"""Tokenizers, corpora, preference formats and the tf.data pipeline."""
