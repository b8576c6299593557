"""Pytrees of arrays at rest: group checkpoints (orbax) and per-run state files (``.npz``).

Nothing is pickled. PRNG keys are stored as their raw key data and re-wrapped on load, and
every load goes through a *template* (the abstract state from ``jax.eval_shape`` of the
experiment's ``init``), so the structure comes from code, never from the file.

In a job of several processes (``jax.process_count() > 1``) a group checkpoint is a collective:
every process calls :meth:`CheckpointWriter.start` with the same host (numpy) tree, orbax
synchronises them with barriers and process 0 writes the (replicated) numpy leaves;
:func:`load_checkpoint` is called by every process and reads the whole checkpoint as host arrays.
``.npz`` files are written by the caller's writer process only.
"""

from __future__ import annotations

import io
import os
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn.runner.distributed import is_multiprocess, is_writer
from jaxlearn.runner.store import atomic_write_bytes

__all__ = ["keys_to_data", "data_to_keys", "is_key", "save_npz", "load_npz", "CheckpointWriter", "load_checkpoint"]


def is_key(leaf) -> bool:
    """Whether ``leaf`` (an array or an abstract one) holds typed PRNG keys."""
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def keys_to_data(tree):
    """Replaces typed PRNG key leaves by their ``uint32`` key data (abstract leaves stay abstract)."""

    def convert(x):
        if not is_key(x):
            return x
        return jax.random.key_data(x) if isinstance(x, jax.Array) else jax.eval_shape(jax.random.key_data, x)

    return jax.tree.map(convert, tree)


def data_to_keys(tree, template):
    """Inverse of :func:`keys_to_data`: re-wraps the leaves that are keys in ``template``."""

    def wrap(x, t):
        if is_key(t):
            # An abstract template leaf carries no implementation: keys made by jax.random.key use
            # the default one.
            impl = jax.random.key_impl(t) if isinstance(t, jax.Array) else None
            return jax.random.wrap_key_data(jnp.asarray(x), impl=impl)
        return x

    return jax.tree.map(wrap, tree, template)


def _leaf_names(template) -> list[str]:
    return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(template)[0]]


def save_npz(path, tree) -> None:
    """Writes ``tree``'s leaves to an ``.npz`` file atomically, named by their key paths."""
    data = keys_to_data(tree)
    names = _leaf_names(data)
    leaves = [np.asarray(x) for x in jax.tree.leaves(data)]
    buffer = io.BytesIO()
    np.savez(buffer, **{f"{i:05d}{name}": leaf for i, (name, leaf) in enumerate(zip(names, leaves))})
    atomic_write_bytes(path, buffer.getvalue())


def load_npz(path, template):
    """Reads a tree saved by :func:`save_npz` into the structure of ``template`` (shapes and
    dtypes checked), as device arrays."""
    expected = _leaf_names(keys_to_data(_abstract(template)))
    with np.load(path, allow_pickle=False) as file:
        stored = sorted(file.files)
        names = [name[5:] for name in stored]
        if names != expected:
            raise ValueError(f"{path}: stored leaves {names[:4]}... do not match the experiment's state "
                             f"{expected[:4]}...; was it written by another experiment version?")
        leaves = [file[name] for name in stored]
    abstract = keys_to_data(_abstract(template))
    for name, leaf, want in zip(expected, leaves, jax.tree.leaves(abstract)):
        if leaf.shape != want.shape or leaf.dtype != want.dtype:
            raise ValueError(f"{path}: leaf {name} is {leaf.dtype}{list(leaf.shape)}, "
                             f"expected {want.dtype}{list(want.shape)}")
    tree = jax.tree.unflatten(jax.tree.structure(abstract), [jnp.asarray(x) for x in leaves])
    return data_to_keys(tree, template)


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)


class CheckpointWriter:
    """Writes group checkpoints with orbax, in the background.

    ``start(path, tree)`` copies ``tree`` to host and returns; the files are written while the
    caller computes the next segment. ``wait()`` blocks until the last write is complete (orbax
    writes into a temporary directory and renames it when done, so a crash never leaves a
    partial checkpoint under ``path``). Use as a context manager; it waits on exit.

    Several processes: every one calls ``start``, ``wait`` and ``close`` at the same points with
    the same host tree (orbax runs barriers across processes inside them, so a save called by
    one process alone never returns); process 0 removes a stale ``path`` and writes the files.
    The background write overlaps the next segment there too.
    """

    def __init__(self):
        import orbax.checkpoint as ocp

        self._checkpointer = ocp.StandardCheckpointer()

    def start(self, path, tree) -> None:
        path = pathlib.Path(path).resolve()
        if is_writer() and path.exists():
            # Left by a crash after the write but before its commit pointer. Removed before the
            # save's first barrier, so no other process sees it.
            shutil.rmtree(path)
        self._checkpointer.save(path, keys_to_data(tree))

    def wait(self) -> None:
        self._checkpointer.wait_until_finished()

    def close(self) -> None:
        self._checkpointer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()  # waits for a write in flight


def load_checkpoint(path, template):
    """Reads a group checkpoint into the structure, shapes and dtypes of ``template``.

    In a job of several processes every process reads the whole checkpoint, as host (numpy)
    leaves (key leaves re-wrapped on a local device), whichever placement wrote it: the caller
    places them (:class:`jaxlearn.runner.placement.Placement`)."""
    import orbax.checkpoint as ocp

    abstract = keys_to_data(_abstract(template))
    if is_multiprocess():
        abstract = jax.tree.map(lambda t: np.zeros(t.shape, t.dtype), abstract)
    with ocp.StandardCheckpointer() as checkpointer:
        tree = checkpointer.restore(pathlib.Path(path).resolve(), abstract)
    return data_to_keys(tree, template)


def remove_tree(path) -> None:
    """Deletes a checkpoint directory (missing is fine)."""
    if os.path.isdir(path):
        shutil.rmtree(path)
