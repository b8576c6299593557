"""jaxlearn._jaxpr.tracing and .equations: a traced program over the leaves of pytrees, inlining
of jit calls, the program a call runs, where variables are read, and walking nested programs.

Ground truth: the traced functions themselves, and programs written out by hand below."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn._jaxpr import Interpreter, called_program, inline, readers, trace, trace_per_example, walk


def test_trace_flattens_arguments_and_result():
    params = {"b": jnp.ones(3), "a": (jnp.zeros((2, 3)), jnp.arange(2))}
    traced = trace(lambda p, x: {"y": p["a"][0] @ x + p["b"][0], "n": p["a"][1]}, params, jnp.ones(3))
    assert [a.shape for a in traced.program.in_avals] == [(2, 3), (2,), (3,), (3,)]  # leaves, jax.tree order
    assert traced.in_tree == jax.tree.structure((params, jnp.ones(3)))
    assert jax.tree.unflatten(traced.out_tree, range(2)) == {"n": 0, "y": 1}
    assert traced.out_shapes["y"].shape == (2,) and traced.out_shapes["n"].dtype == jnp.arange(2).dtype


def test_trace_per_example_inlines_jit_calls_only():
    @jax.jit
    def layer(w, x):
        return jax.nn.relu(jax.jit(jnp.dot)(x, w))

    def model(p, x):  # x: (N, 3)
        return layer(p["w2"], layer(p["w1"], x))

    params = {"w1": jnp.ones((3, 4)), "w2": jnp.ones((4, 2))}
    x = jax.random.normal(jax.random.key(0), (3,))
    program = trace_per_example(model, params, x).program
    top = [eqn.primitive.name for eqn in program.jaxpr.eqns]
    assert "jit" not in top and top.count("custom_jvp_call") == 2 and top.count("dot_general") == 2
    np.testing.assert_array_equal(Interpreter().run(program, [params["w1"], params["w2"], x])[0],
                                  model(params, x[None])[0])
    assert inline(program).jaxpr.eqns.__len__() == len(program.jaxpr.eqns)  # inlining again changes nothing


def test_called_program_readers_and_walk():
    def f(x):
        y = jax.jit(lambda v: jnp.sin(v) * v)(x)
        return y + jax.lax.scan(lambda c, _: (jnp.cos(c), None), y, None, length=2)[0], y

    jaxpr = jax.make_jaxpr(f)(jnp.ones(2)).jaxpr
    call, scan = jaxpr.eqns[0], jaxpr.eqns[1]
    sub = called_program(call)
    assert [e.primitive.name for e in sub.jaxpr.eqns] == ["sin", "mul"]
    assert len(sub.in_avals) == len(call.invars) and len(sub.out_avals) == len(call.outvars)
    assert called_program(scan) is None  # a loop body runs on slices, not on the equation's inputs
    y = call.outvars[0]
    assert readers(jaxpr)[y] == [scan, jaxpr.eqns[2], None]  # read by scan and add; an output
    assert [e.primitive.name for e in walk(jaxpr)] == ["jit", "sin", "mul", "scan", "cos", "add"]
