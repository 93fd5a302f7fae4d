"""Sequence classification with a head on the language model's last real token."""
import tensorflow as tf

from tfpref.models.heads import ClassifierHead
from tfpref.objectives.base import Objective, ObjectiveOutput


class ClassifyObjective(Objective):
    """loss_i = cross-entropy of the head's logits against example i's label.

    With --freeze_backbone the language model runs in inference mode and no gradient flows into
    it (stop_gradient), so a step costs one forward pass of the backbone.
    """

    name = "classify"
    packed = False
    needs_labels = True

    def __init__(self, config):
        super().__init__(config)
        self.head = ClassifierHead(len(config.classes), dropout=config.model.dropout, name="classifier")
        self.head.build((None, None, config.model.d_model))
        self.trainable_layers = [self.head]

    @classmethod
    def load_data(cls, config, wanted=("train", "validation"), show_progress=True):
        from tfpref.data.loading import load_labeled_data

        return load_labeled_data(config, wanted)

    def logits(self, batch, model, training):
        frozen = self.config.train.freeze_backbone
        hidden = model.hidden_states(batch["token_ids"], batch["padding_mask"], training=training and not frozen)
        if frozen:
            hidden = tf.stop_gradient(hidden)
        return self.head(hidden, batch["padding_mask"], training=training)

    def compute(self, batch, model, training):
        logits = self.logits(batch, model, training)
        labels = tf.cast(batch["label"], tf.int32)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
        count = tf.cast(tf.size(labels), tf.float32)
        return ObjectiveOutput(losses=losses, metrics={"accuracy": (tf.reduce_sum(correct), count)})
