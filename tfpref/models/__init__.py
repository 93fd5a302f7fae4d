"""Language models, the conv reward-model encoder and heads. `build_model(config)` makes the model a
ModelConfig names."""
from tfpref.config import MAX_TRANSFORMER_SEQ_LEN
from tfpref.data.tokenizer import VOCAB_SIZE
from tfpref.models.conv import ConvEncoder
from tfpref.models.heads import ClassifierHead, ScalarHead
from tfpref.models.logprobs import sequence_logprobs
from tfpref.models.lstm import LstmLM
from tfpref.models.transformer import TransformerLM

MODEL_CLASSES = {"transformer": TransformerLM, "lstm": LstmLM, "conv": ConvEncoder}


def build_model(model_config, seed=None):
    """A built (weights created) model from a `ModelConfig`: a language model, or the conv encoder."""
    model = MODEL_CLASSES[model_config.model](
        vocab_size=VOCAB_SIZE, d_model=model_config.d_model, num_layers=model_config.num_layers,
        num_heads=model_config.num_heads, ff_dim=model_config.ff_dim, dropout=model_config.dropout,
        tie_embeddings=model_config.tie_embeddings, max_seq_len=MAX_TRANSFORMER_SEQ_LEN, seed=seed,
        name=model_config.model)
    model.build()
    return model


__all__ = ["build_model", "sequence_logprobs", "TransformerLM", "LstmLM", "ConvEncoder", "ScalarHead",
           "ClassifierHead", "MODEL_CLASSES"]
