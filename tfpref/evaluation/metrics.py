"""Classification metrics from predicted and true class ids (NumPy; exact, no approximation)."""
import numpy as np


def confusion_matrix(labels, predictions, num_classes):
    """[true, predicted] counts."""
    matrix = np.zeros([num_classes, num_classes], np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def classification_report(labels, predictions, class_names):
    """Accuracy, per-class and macro precision/recall/F1, and the confusion matrix.

    A class never predicted has precision 0 (and likewise recall for a class never present), the
    convention of scikit-learn's `zero_division=0`.
    """
    matrix = confusion_matrix(labels, predictions, len(class_names))
    true_positive = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, actual, out=np.zeros_like(true_positive), where=actual > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
    report = {"accuracy": float(true_positive.sum() / max(matrix.sum(), 1)),
              "macro_precision": float(precision.mean()), "macro_recall": float(recall.mean()),
              "macro_f1": float(f1.mean())}
    for i, name in enumerate(class_names):
        report.update({f"precision/{name}": float(precision[i]), f"recall/{name}": float(recall[i]),
                       f"f1/{name}": float(f1[i])})
    return report, matrix
