"""Sequence classification with a head on the language model's last real token."""
import tensorflow as tf

from tfpref.data.loading import load_labeled_data
from tfpref.objectives.base import Objective, ObjectiveOutput


class ClassifyObjective(Objective):
    """loss_i = cross-entropy of the classifier's logits against example i's label.

    With --freeze_backbone the language model runs in inference mode and no gradient flows into
    it (stop_gradient), so a step costs one forward pass of the backbone.
    """

    name = "classify"

    @classmethod
    def load_data(cls, config, wanted=("train", "validation"), show_progress=True):
        return load_labeled_data(config, wanted)

    def compute(self, batch, model, training):
        logits = model(batch["token_ids"], batch["padding_mask"], training=training,
                       freeze_backbone=self.config.train.freeze_backbone)
        labels = tf.cast(batch["label"], tf.int32)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
        count = tf.cast(tf.size(labels), tf.float32)
        return ObjectiveOutput(losses=losses, metrics={"accuracy": (tf.reduce_sum(correct), count)})
