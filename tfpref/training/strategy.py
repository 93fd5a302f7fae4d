"""tf.distribute strategies from `--strategy` and `--cpu_replicas`."""
import json
import os

import tensorflow as tf

from tfpref.errors import UserError


def split_cpu(num_devices):
    """Expose the CPU as `num_devices` logical devices (must run before TensorFlow uses a device)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
    except RuntimeError:
        current = len(tf.config.list_logical_devices("CPU"))
        if current != num_devices:
            raise UserError(f"--cpu_replicas {num_devices}: TensorFlow is already initialised with "
                            f"{current} CPU device(s) in this process") from None


def make_strategy(runtime_config):
    """The tf.distribute.Strategy a RuntimeConfig asks for."""
    name, cpu_replicas = runtime_config.strategy, runtime_config.cpu_replicas
    if name == "default":
        if cpu_replicas > 1:
            raise UserError("--cpu_replicas needs --strategy=mirrored")
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if cpu_replicas:
            split_cpu(cpu_replicas)
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
            # NCCL is GPU-only; on CPU devices gradients are summed on one device.
            return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
        return tf.distribute.MirroredStrategy()
    if "TF_CONFIG" not in os.environ:
        raise UserError("--strategy=multi_worker needs the TF_CONFIG environment variable "
                        "(cluster spec and this worker's task)")
    try:
        json.loads(os.environ["TF_CONFIG"])
    except ValueError as e:
        raise UserError(f"TF_CONFIG is not valid JSON ({e})") from None
    if cpu_replicas:
        split_cpu(cpu_replicas)
    communication = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.AUTO)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=communication)


def is_chief(strategy):
    """True on the one worker that writes checkpoints, summaries and config."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (task_type == "worker" and task_id == 0
                                    and "chief" not in resolver.cluster_spec().as_dict())
