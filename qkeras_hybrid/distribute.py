"""Data-parallel training on several processes and machines with `tf.distribute`.

TensorFlow's `tf.distribute.MultiWorkerMirroredStrategy` does the work: every
worker holds a copy of the model, trains it on its share of each global batch,
and the gradients are summed with the strategy's collective all-reduce. This
module only makes Keras 3's own `Model.fit` run under it, and adds what a
multi-worker run needs around it:

* `enable_multi_worker_fit()`, called on import: Keras 3.15's TensorFlow
  trainer fails under `MultiWorkerMirroredStrategy` with
  `ValueError: Attempt to convert a value (PerReplica:{...}) ... to a Tensor`
  (keras-team/keras#20585). Two small functions of the trainer are wrapped so
  that `fit`, `evaluate` and `predict` work there; nothing changes for other
  strategies.
* `enable_per_replica_seeds()`, called on import: Keras's
  `keras.random.SeedGenerator` hands every replica the same seed, so
  `Dropout`, sampled quantum layers (`shots=`), `SampleLayer` and noisy
  trajectories drew the same random numbers on every replica and worker
  (for different data). Seeds drawn inside a replica of a multi-replica
  strategy now have the replica's id folded in, as `tf.random.Generator`
  does under a strategy; single-device runs are unchanged.
* `BackupAndRestore`: `keras.callbacks.BackupAndRestore` made safe for several
  workers, so a job whose worker dies is restarted and resumes from the last
  completed epoch.
* `tf_config`, `free_ports`, `launch_local`: the `TF_CONFIG` of each worker
  and a launcher of N workers on this machine, to try a multi-worker run
  locally (on several machines, each one runs the same script with its own
  `TF_CONFIG`).

Example:

    # every worker runs this with its own TF_CONFIG
    import qkeras_hybrid  # installs the fit fix
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = build_model()
        model.compile(...)
    model.fit(dataset_of_global_batches, epochs=5,
              callbacks=[qkeras_hybrid.distribute.BackupAndRestore("/tmp/backup")])
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import keras
import tensorflow as tf

__all__ = [
    "BackupAndRestore",
    "enable_multi_worker_fit",
    "enable_per_replica_seeds",
    "free_ports",
    "is_multi_worker",
    "launch_local",
    "tf_config",
    "worker_index",
]


# ------------------------------------------------------------- the fit fix


def is_multi_worker(strategy):
    """True if `strategy` is a `MultiWorkerMirroredStrategy` spanning more than one worker."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    in_multi_worker_mode = getattr(strategy.extended, "_in_multi_worker_mode", None)
    return bool(in_multi_worker_mode and in_multi_worker_mode())


def worker_index(strategy=None):
    """This worker's index in the cluster (0 is the chief), 0 outside a multi-worker strategy."""
    strategy = strategy or tf.distribute.get_strategy()
    if not is_multi_worker(strategy):
        return 0
    resolver = strategy.cluster_resolver
    # A cluster with an explicit "chief" job numbers its workers after it.
    has_chief = "chief" in resolver.cluster_spec().jobs
    return resolver.task_id + (1 if has_chief and resolver.task_type == "worker" else 0)


def _local_values(batch, strategy):
    """A structure of per-replica values -> the same structure of this worker's first replica's values."""
    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    return keras.tree.map_structure(local, batch)


def _wrap_maybe_symbolic_build(original):
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras builds the optimizer and metrics from one batch, which it first
        # averages over the replicas with `strategy.reduce`; only its shapes and
        # dtypes are used. Under MultiWorkerMirroredStrategy that reduce is a
        # cross-worker collective on a nested (x, y) structure, which
        # CollectiveAllReduceStrategy cannot reduce (keras-team/keras#20585).
        # The local replica's batch has the same per-replica shapes.
        strategy = self._distribute_strategy
        if iterator is not None and strategy is not None and is_multi_worker(strategy):
            for _, _, data_iterator in iterator:
                data_batch = _local_values(next(data_iterator), strategy)
                break
            iterator = None
        return original(self, iterator=iterator, data_batch=data_batch)

    _maybe_symbolic_build._qkeras_hybrid_original = original
    return _maybe_symbolic_build


def _reduce_over_replicas(values, strategy, op):
    """Each value of the structure averaged (op "MEAN") or summed ("SUM") over all replicas."""
    flat = keras.tree.flatten(values)
    dtypes = {getattr(v, "dtype", None) for v in flat}
    if flat and len(dtypes) == 1 and dtypes.pop() in (tf.float16, tf.bfloat16, tf.float32, tf.float64):
        # One collective for all the logs: each collective costs a round trip
        # between the workers, as much as a whole step of a small model.
        device = strategy.extended.worker_devices[0]
        reduced = strategy.extended.batch_reduce_to(op, [(v, device) for v in flat])
        local = [strategy.experimental_local_results(r)[0] for r in reduced]
        return keras.tree.pack_sequence_as(values, local)
    return keras.tree.map_structure(lambda v: strategy.reduce(op, v, axis=None), values)


def _wrap_reduce_per_replica(original):
    def reduce_per_replica(values, strategy, reduction):
        # Keras reduces the step's logs (scalar metric results) across workers
        # with `strategy.reduce("MEAN", v, axis=0)`, which fails on a scalar,
        # and "sum" without the required `axis`. Averaging (or summing) each
        # value over the replicas, as `axis=None` does, is what Keras does for
        # a single-worker MirroredStrategy.
        if is_multi_worker(strategy):
            if reduction == "auto":
                reduction = "mean"
            if reduction in ("mean", "sum"):
                return _reduce_over_replicas(values, strategy, reduction.upper())
        return original(values, strategy, reduction)

    reduce_per_replica._qkeras_hybrid_original = original
    return reduce_per_replica


def enable_multi_worker_fit():
    """Makes Keras's `Model.fit`, `evaluate` and `predict` work under `MultiWorkerMirroredStrategy`.

    Keras 3's TensorFlow trainer fails there before the first step
    (keras-team/keras#20585): it averages one input batch over all workers
    just to read its shapes, with a reduction the multi-worker strategy does
    not support for an `(x, y)` structure; and it then averages the scalar
    logs of each step with `axis=0`. This wraps those two functions of
    `keras.src.backend.tensorflow.trainer` so that under a multi-worker
    `MultiWorkerMirroredStrategy` the shapes come from the local batch and the
    logs are averaged over the replicas as for `MirroredStrategy`. Everything
    else, the training step, the gradient all-reduce, callbacks, metrics, the
    progress bar, TensorBoard, stays Keras's and TensorFlow's, and other
    strategies are not affected.

    `import qkeras_hybrid` calls this; calling it again does nothing.

    Returns:
      True if the fix is installed, False if this Keras has no TensorFlow
      trainer with those two functions (another Keras version or backend),
      in which case nothing is changed.
    """
    try:
        from keras.src.backend.tensorflow import trainer as tf_trainer
    except ImportError:  # pragma: no cover - another backend or layout
        return False
    trainer_class = getattr(tf_trainer, "TensorFlowTrainer", None)
    symbolic_build = getattr(trainer_class, "_maybe_symbolic_build", None)
    reduce_fn = getattr(tf_trainer, "reduce_per_replica", None)
    if symbolic_build is None or reduce_fn is None:  # pragma: no cover - another Keras
        return False
    if not hasattr(symbolic_build, "_qkeras_hybrid_original"):
        trainer_class._maybe_symbolic_build = _wrap_maybe_symbolic_build(symbolic_build)
    if not hasattr(reduce_fn, "_qkeras_hybrid_original"):
        tf_trainer.reduce_per_replica = _wrap_reduce_per_replica(reduce_fn)
    return True


# ------------------------------------------- random streams per replica


def _replica_id():
    """This replica's index among all replicas in sync (an int32 scalar), or None outside a multi-replica step.

    Under `MultiWorkerMirroredStrategy` the index counts the replicas of all
    workers, so it differs between workers too.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:  # cross-replica context, or one replica
        return None
    return context.replica_id_in_sync_group


def _wrap_seed_generator_next(original):
    def next(self, ordered=True):
        seed = original(self, ordered=ordered)
        replica = _replica_id()
        if replica is None or not tf.is_tensor(seed):
            return seed
        # A SeedGenerator's state is a mirrored variable: every replica holds
        # and advances the same value, so without this every replica would
        # draw the same dropout masks, shots and trajectories, and the
        # all-reduced gradient would carry the noise of one replica instead
        # of the global batch's. Hashing the replica id into the seed is what
        # `tf.random.Generator` does under a strategy; the state itself stays
        # the same on every replica (it is saved from the first one).
        return tf.random.experimental.stateless_fold_in(seed, tf.cast(replica, seed.dtype))

    next._qkeras_hybrid_original = original
    return next


def enable_per_replica_seeds(enabled=True):
    """Gives each replica of a `tf.distribute` strategy its own random stream.

    Keras layers draw their random numbers from a
    `keras.random.SeedGenerator`, whose state is a variable that a strategy
    mirrors: every replica (and every worker of a
    `MultiWorkerMirroredStrategy`) reads and advances the same seed. So
    `keras.layers.Dropout`, the shot noise of `QuantumLayer(shots=...)`,
    `ProbabilityLayer(shots=...)` and `QuantumConv2D(shots=...)`, the samples
    of `SampleLayer` and noisy trajectories (`simulation="trajectories"`) are
    the same on every replica for the same inputs: the replicas' noise is
    fully correlated, and the averaged gradient is as noisy as one replica's
    instead of the global batch's.

    This wraps `keras.random.SeedGenerator.next` so that a seed drawn inside a
    replica of a strategy with more than one replica in sync has the
    replica's id (`replica_id_in_sync_group`, global across workers) folded
    in with `tf.random.experimental.stateless_fold_in`, the way
    `tf.random.Generator` separates replicas. Runs stay reproducible: a fixed
    seed gives the same draws on the same replica. Outside such a replica
    (no strategy, one replica, cross-replica code such as variable
    initializers) `next` returns exactly what Keras's returns, so
    single-device runs are bit-identical with and without it.

    `import qkeras_hybrid` calls this; calling it again does nothing.

    Args:
      enabled: False restores Keras's own `SeedGenerator.next` (the same
        seed on every replica).

    Returns:
      Whether per-replica seeds are now on.
    """
    generator_class = keras.random.SeedGenerator
    current = generator_class.next
    original = getattr(current, "_qkeras_hybrid_original", None)
    if enabled and original is None:
        generator_class.next = _wrap_seed_generator_next(current)
    elif not enabled and original is not None:
        generator_class.next = original
    return bool(enabled)


# ------------------------------------------------------ fault tolerance

_CHECKPOINT = re.compile(r"^epoch-(\d+)\.weights\.h5$")


def _agree_on_minimum(strategy, value):
    """The smallest of every worker's `value` (an int); a collective: every worker must call it."""
    gathered = strategy.gather(tf.constant([value], tf.int64), axis=0)
    return int(tf.reduce_min(gathered).numpy())


class BackupAndRestore(keras.callbacks.Callback):
    """`keras.callbacks.BackupAndRestore` for one or several workers.

    Saves the model (weights and optimizer state) at the end of every epoch
    and, when `fit` is started again after an interruption, restores the last
    saved epoch and continues from there, so the run takes the same steps as
    an uninterrupted one. With `MultiWorkerMirroredStrategy`, if any worker
    dies the others fail within seconds (TensorFlow's coordination service
    notices the missing heartbeat), and restarting every worker resumes the
    job.

    What it adds to Keras's callback, which assumes a single process:

    * each worker writes under its own `backup_dir/worker-<index>`, so workers
      sharing a file system do not write the same file, and workers on
      machines without a shared file system each keep their own copy (the
      weights are the same on every worker);
    * each epoch goes to its own file, written under a temporary name and
      renamed, so a process killed while saving leaves the previous epoch
      intact; the last two are kept;
    * on restart the workers agree, with one small collective, on the last
      epoch that every one of them saved (a worker killed while saving may be
      one epoch behind the others), and all restore that one.

    Args:
      backup_dir: directory of the checkpoints (local or any path
        `keras.Model.save_weights` accepts). It must not be shared with
        another run, and must be the same path on every restart.
      delete_checkpoint: if True (default), the checkpoints are deleted when
        `fit` finishes normally.

    Example:

    >>> import tempfile, numpy as np, keras
    >>> import qkeras_hybrid
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> backup = qkeras_hybrid.distribute.BackupAndRestore(tempfile.mkdtemp())
    >>> history = model.fit(np.zeros((8, 2)), np.zeros((8, 1)), epochs=2, verbose=0,
    ...                     callbacks=[backup])
    >>> len(history.history["loss"])
    2
    """

    KEEP = 2

    def __init__(self, backup_dir, delete_checkpoint=True):
        super().__init__()
        if not backup_dir or not isinstance(backup_dir, (str, os.PathLike)):
            raise ValueError(f"BackupAndRestore needs a backup_dir (a non-empty path), got {backup_dir!r}")
        self.backup_dir = os.fspath(backup_dir)
        self.delete_checkpoint = bool(delete_checkpoint)
        self._worker_dir = None

    def _checkpoint_path(self, epoch):
        return os.path.join(self._worker_dir, f"epoch-{epoch}.weights.h5")

    def _saved_epochs(self):
        if not tf.io.gfile.isdir(self._worker_dir):
            return []
        matches = (_CHECKPOINT.match(name) for name in tf.io.gfile.listdir(self._worker_dir))
        return sorted(int(match.group(1)) for match in matches if match)

    def on_train_begin(self, logs=None):
        if not self.model.built:
            raise ValueError(
                f"BackupAndRestore needs a built model before fit; model {self.model.name!r} is not built "
                "(give it an Input or call it on a batch first)"
            )
        strategy = self.model.distribute_strategy
        self._worker_dir = os.path.join(self.backup_dir, f"worker-{worker_index(strategy)}")
        saved = self._saved_epochs()
        epoch = self._agreed_epoch(strategy, saved[-1] if saved else 0)
        if epoch == 0:
            return
        if epoch not in saved:
            raise ValueError(
                f"BackupAndRestore: the workers agreed to resume from epoch {epoch}, but "
                f"{self._worker_dir} holds epochs {saved}; delete {self.backup_dir} to start over"
            )
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            # The optimizer's variables must exist for its state to load.
            optimizer.build(self.model.trainable_variables)
        self.model.load_weights(self._checkpoint_path(epoch))
        # How Keras's own BackupAndRestore tells `fit` where to resume.
        self.model._initial_epoch = epoch

    def _agreed_epoch(self, strategy, epoch):
        """The last epoch every worker saved, given this worker's last `epoch`."""
        return _agree_on_minimum(strategy, epoch) if is_multi_worker(strategy) else epoch

    def on_epoch_end(self, epoch, logs=None):
        tf.io.gfile.makedirs(self._worker_dir)
        final = self._checkpoint_path(epoch + 1)
        partial = os.path.join(self._worker_dir, f"partial-epoch-{epoch + 1}.weights.h5")
        self.model.save_weights(partial, overwrite=True)
        tf.io.gfile.rename(partial, final, overwrite=True)
        for old in self._saved_epochs()[:-self.KEEP]:
            tf.io.gfile.remove(self._checkpoint_path(old))

    def on_train_end(self, logs=None):
        # A later `fit` on the same model starts from its own initial_epoch.
        self.model._initial_epoch = None
        if self.delete_checkpoint and tf.io.gfile.isdir(self._worker_dir):
            tf.io.gfile.rmtree(self._worker_dir)
            try:  # the last worker to finish removes the directory
                if not tf.io.gfile.listdir(self.backup_dir):
                    tf.io.gfile.rmtree(self.backup_dir)
            except (tf.errors.OpError, OSError):
                pass

    def get_config(self):
        return {"backup_dir": self.backup_dir, "delete_checkpoint": self.delete_checkpoint}


# --------------------------------------------------- workers on localhost


def tf_config(workers, index):
    """The `TF_CONFIG` JSON string of worker `index` of a cluster of `workers` ("host:port" strings).

    Worker 0 is the chief: it hosts TensorFlow's coordination service and is
    the one that should write logs and files.
    """
    workers = list(workers)
    if not workers or not all(isinstance(w, str) and ":" in w for w in workers):
        raise ValueError(f"workers must be a non-empty list of 'host:port' strings, got {workers!r}")
    if not isinstance(index, int) or not 0 <= index < len(workers):
        raise ValueError(f"index must be an int in [0, {len(workers)}), got {index!r}")
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def free_ports(count, host="localhost"):
    """`count` distinct TCP ports that are free on `host` now.

    The sockets are held open until all ports are chosen, so the ports are
    distinct; another process could still take one before a worker binds it,
    which `launch_local` survives by restarting with new ports.
    """
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _stop(processes, grace_seconds):
    """SIGTERM, then SIGKILL after `grace_seconds`, the processes still running."""
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for p in processes:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch_local(
    command,
    num_workers,
    max_restarts=0,
    failure_grace_seconds=60.0,
    timeout=None,
    env=None,
    log_dir=None,
    host="localhost",
):
    """Runs `command` as `num_workers` workers on this machine, each with its `TF_CONFIG`.

    What a cluster manager does on several machines, for one machine: it
    picks free ports, starts the workers, waits for them, and if any fails,
    stops the others (after `failure_grace_seconds`, since they normally fail
    by themselves within seconds when a peer dies) and restarts all of them,
    up to `max_restarts` times. With `BackupAndRestore` in the training
    script, a restarted job resumes from the last completed epoch.

    Args:
      command: the worker's command line, a list such as
        `[sys.executable, "train.py", "--epochs", "5"]`.
      num_workers: number of worker processes (>= 1).
      max_restarts: how many times a failed job is restarted.
      failure_grace_seconds: how long the other workers may take to exit
        after one failed.
      timeout: if given, seconds after which the whole job is stopped and a
        `TimeoutError` raised.
      env: environment of the workers (default: this process's); `TF_CONFIG`
        is set for each.
      log_dir: if given, worker i's output goes to `log_dir/worker-<i>.log`
        (appended across restarts); otherwise workers inherit this process's
        stdout and stderr.
      host: the address the workers listen on.

    Returns:
      The number of restarts that were needed.

    Raises:
      RuntimeError: if the job still fails after `max_restarts` restarts
        (the message gives each worker's exit code).
    """
    if not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be a positive int, got {num_workers!r}")
    if isinstance(command, str) or not command:
        raise ValueError(f"command must be a non-empty list of arguments, got {command!r}")
    base_env = dict(os.environ if env is None else env)
    deadline = None if timeout is None else time.monotonic() + timeout
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
    for attempt in range(max_restarts + 1):
        workers = [f"{host}:{port}" for port in free_ports(num_workers, host)]
        processes, logs = [], []
        try:
            for index in range(num_workers):
                worker_env = dict(base_env, TF_CONFIG=tf_config(workers, index))
                out = None
                if log_dir:
                    out = open(os.path.join(log_dir, f"worker-{index}.log"), "a")
                    out.write(f"=== attempt {attempt}: {' '.join(map(str, command))}\n")
                    out.flush()
                    logs.append(out)
                processes.append(subprocess.Popen(
                    list(map(str, command)), env=worker_env, stdout=out, stderr=subprocess.STDOUT if out else None,
                ))
            failed_at = None
            while any(p.poll() is None for p in processes):
                if failed_at is None and any(p.poll() not in (None, 0) for p in processes):
                    failed_at = time.monotonic()
                if failed_at is not None and time.monotonic() - failed_at > failure_grace_seconds:
                    _stop(processes, grace_seconds=5.0)
                if deadline is not None and time.monotonic() > deadline:
                    _stop(processes, grace_seconds=5.0)
                    raise TimeoutError(f"launch_local: {num_workers} workers did not finish within {timeout} s")
                time.sleep(0.1)
        finally:
            _stop(processes, grace_seconds=5.0)
            for out in logs:
                out.close()
        codes = [p.returncode for p in processes]
        if all(code == 0 for code in codes):
            return attempt
        print(f"launch_local: attempt {attempt} failed, worker exit codes {codes}"
              + ("; restarting all workers" if attempt < max_restarts else ""), file=sys.stderr, flush=True)
    raise RuntimeError(f"launch_local: workers failed (exit codes {codes}) after {max_restarts} restarts")


enable_multi_worker_fit()
enable_per_replica_seeds()
